<?php
namespace TaskQ\Tests\Support;

/**
 * A headless Chromium driven over the W3C WebDriver protocol, for the
 * status page's browser test: starts `chromedriver` on a free loopback
 * port (tagged, so ProcessTree can kill it and the browser it starts),
 * opens one session and speaks plain HTTP/JSON to it; no composer
 * package. Every call is bounded.
 */
final class WebDriver
{
    /** Seconds one WebDriver command may take. */
    private const COMMAND_TIMEOUT = 30;

    /** @var resource */
    private $process;
    private string $base;
    private ?string $session = null;

    private function __construct(private string $tag, int $port, string $log)
    {
        $this->base = "http://127.0.0.1:$port";
        // HOME and XDG dirs in the test's directory: Chromium's crash
        // reporter and caches write there, not into the user's home.
        $home = dirname($log);
        $env = array_merge(getenv(), [
            'TASKQ_TEST_TAG' => $tag,
            'HOME' => $home,
            'XDG_CONFIG_HOME' => "$home/.config",
            'XDG_CACHE_HOME' => "$home/.cache",
        ]);
        $this->process = proc_open(
            [self::chromedriver(), "--port=$port", '--allowed-ips=127.0.0.1', "--log-path=$log"],
            [0 => ['file', '/dev/null', 'r'], 1 => ['file', "$log.out", 'w'], 2 => ['file', "$log.out", 'a']],
            $pipes,
            null,
            $env
        );
    }

    /** Why the browser test cannot run here, or null when Chromium and chromedriver are installed. */
    public static function missing(): ?string
    {
        foreach (['chromium' => self::chromium(), 'chromedriver' => self::chromedriver()] as $name => $path) {
            if ($path === null) {
                return "$name is not installed (Debian packages chromium and chromium-driver; `make deps` installs them)";
            }
        }
        return null;
    }

    private static function which(string $name): ?string
    {
        foreach (explode(':', (string) getenv('PATH')) as $dir) {
            if ($dir !== '' && is_executable("$dir/$name")) {
                return "$dir/$name";
            }
        }
        return null;
    }

    private static function chromium(): ?string
    {
        return self::which('chromium');
    }

    private static function chromedriver(): ?string
    {
        return self::which('chromedriver');
    }

    /**
     * Starts chromedriver on `$port` and a headless Chromium session whose
     * profile lives in `$dir`; the window is `$width` x `$height`.
     */
    public static function start(string $tag, int $port, string $dir, int $width = 1280, int $height = 1000): self
    {
        $driver = new self($tag, $port, "$dir/chromedriver.log");
        $deadline = microtime(true) + 15;
        while (true) {
            try {
                [, $ready] = self::request($driver->base, 'GET', '/status', null, 1);
                if (json_decode($ready, true)['value']['ready'] ?? false) {
                    break;
                }
            } catch (\RuntimeException) {
                // Not listening yet.
            }
            if (microtime(true) > $deadline || !proc_get_status($driver->process)['running']) {
                $driver->stop();
                throw new \RuntimeException('chromedriver did not become ready within 15 s: ' . @file_get_contents("$dir/chromedriver.log.out"));
            }
            usleep(50000);
        }
        $args = [
            '--headless=new',
            '--disable-gpu',
            '--disable-dev-shm-usage',
            '--no-first-run',
            '--no-default-browser-check',
            '--disable-extensions',
            '--disable-background-networking',
            '--disable-component-update',
            '--disable-sync',
            "--window-size=$width,$height",
            "--user-data-dir=$dir/chromium-profile",
            // Chromium's sandbox refuses to run as root and needs user
            // namespaces that CI containers often lack; the browser only
            // loads the test's own loopback pages.
            '--no-sandbox',
        ];
        try {
            $value = $driver->command('POST', '/session', ['capabilities' => ['alwaysMatch' => [
                'browserName' => 'chrome',
                'pageLoadStrategy' => 'normal',
                'timeouts' => ['script' => 10000, 'pageLoad' => 15000, 'implicit' => 0],
                'goog:chromeOptions' => ['binary' => self::chromium(), 'args' => $args],
            ]]]);
        } catch (\Throwable $e) {
            $driver->stop();
            throw $e;
        }
        $driver->session = $value['sessionId'];
        return $driver;
    }

    /**
     * One WebDriver command; returns its `value`, throws with the driver's
     * error and message on a non-2xx answer.
     */
    private function command(string $method, string $path, array|object|null $body = null): mixed
    {
        [$status, $raw] = self::request($this->base, $method, $path, $body === null ? null : json_encode($body, JSON_UNESCAPED_SLASHES), self::COMMAND_TIMEOUT);
        $answer = json_decode($raw, true);
        if ($status < 200 || $status > 299) {
            $error = $answer['value']['error'] ?? 'unknown error';
            $message = $answer['value']['message'] ?? $raw;
            throw new \RuntimeException("WebDriver $method $path answered $status $error: $message");
        }
        return $answer['value'] ?? null;
    }

    /**
     * One HTTP/1.1 request to chromedriver, done within `$timeout` seconds;
     * returns [status, body]. The body is read by its Content-Length:
     * chromedriver keeps connections open, so reading to the end would wait
     * for the timeout.
     */
    private static function request(string $base, string $method, string $path, ?string $body, float $timeout): array
    {
        $deadline = microtime(true) + $timeout;
        $s = @stream_socket_client('tcp://' . substr($base, strlen('http://')), $errno, $errstr, min(5, $timeout));
        if ($s === false) {
            throw new \RuntimeException("WebDriver $method $path: cannot connect: $errstr");
        }
        try {
            $head = "$method $path HTTP/1.1\r\nHost: " . substr($base, strlen('http://')) . "\r\nConnection: close\r\n";
            if ($body !== null) {
                $head .= "Content-Type: application/json\r\nContent-Length: " . strlen($body) . "\r\n";
            }
            fwrite($s, "$head\r\n" . ($body ?? ''));
            $raw = '';
            $length = null;
            $headerEnd = false;
            while (true) {
                $left = $deadline - microtime(true);
                if ($left <= 0) {
                    throw new \RuntimeException("WebDriver $method $path: no complete answer within {$timeout} s");
                }
                stream_set_timeout($s, (int) ceil($left));
                $chunk = fread($s, 65536);
                if ($chunk === false || ($chunk === '' && feof($s))) {
                    break;
                }
                $raw .= $chunk;
                if ($headerEnd === false && ($headerEnd = strpos($raw, "\r\n\r\n")) !== false) {
                    $length = preg_match('/^content-length:\s*(\d+)/mi', substr($raw, 0, $headerEnd), $m) ? (int) $m[1] : null;
                }
                if ($headerEnd !== false && $length !== null && strlen($raw) - $headerEnd - 4 >= $length) {
                    break;
                }
            }
            if ($headerEnd === false) {
                throw new \RuntimeException("WebDriver $method $path: the connection closed before an answer");
            }
            $status = (int) (explode(' ', substr($raw, 0, strpos($raw, "\r\n")))[1] ?? 0);
            return [$status, substr($raw, $headerEnd + 4, $length ?? PHP_INT_MAX)];
        } finally {
            fclose($s);
        }
    }

    private function sessionCommand(string $method, string $path, array|object|null $body = null): mixed
    {
        return $this->command($method, "/session/$this->session$path", $body);
    }

    /** Loads `$url` and waits for its load event. */
    public function open(string $url): void
    {
        $this->sessionCommand('POST', '/url', ['url' => $url]);
    }

    /** Runs `$script` (a function body; `arguments` holds `$args`) in the page and returns what it returns. */
    public function script(string $script, array $args = []): mixed
    {
        return $this->sessionCommand('POST', '/execute/sync', ['script' => $script, 'args' => $args]);
    }

    /** The element id of the first match of CSS `$selector`; throws if none matches. */
    public function find(string $selector): string
    {
        // The reference is an object with one key, the W3C element identifier.
        $ref = $this->sessionCommand('POST', '/element', ['using' => 'css selector', 'value' => $selector]);
        return (string) reset($ref);
    }

    /** The rendered text of the first match of `$selector`. */
    public function text(string $selector): string
    {
        $id = $this->find($selector);
        return (string) $this->sessionCommand('GET', "/element/$id/text");
    }

    /** Clicks the first match of `$selector` as a user would (it must be visible). */
    public function click(string $selector): void
    {
        $id = $this->find($selector);
        $this->sessionCommand('POST', "/element/$id/click", new \stdClass());
    }

    /** Types `$text` into the first match of `$selector`. */
    public function type(string $selector, string $text): void
    {
        $id = $this->find($selector);
        $this->sessionCommand('POST', "/element/$id/value", ['text' => $text]);
    }

    /** Whether the first match of `$selector` is shown. */
    public function displayed(string $selector): bool
    {
        $id = $this->find($selector);
        return (bool) $this->sessionCommand('GET', "/element/$id/displayed");
    }

    /** A PNG of the viewport, written to `$file`. */
    public function screenshot(string $file): void
    {
        $png = base64_decode((string) $this->sessionCommand('GET', '/screenshot'), true);
        if ($png === false || !str_starts_with($png, "\x89PNG")) {
            throw new \RuntimeException('the screenshot is not a PNG');
        }
        if (!is_dir(dirname($file))) {
            mkdir(dirname($file), 0777, true);
        }
        file_put_contents($file, $png);
    }

    /** Ends the session (bounded) and kills chromedriver and every browser process it started. */
    public function stop(): void
    {
        if ($this->session !== null) {
            try {
                $this->command('DELETE', "/session/$this->session");
            } catch (\Throwable) {
                // The processes are killed below in any case.
            }
            $this->session = null;
        }
        ProcessTree::killAll($this->tag);
        if (is_resource($this->process)) {
            proc_close($this->process);
        }
    }
}
