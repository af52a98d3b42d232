<?php
// Helpers shared by bench/run.php and bench/producer.php: starting and
// stopping tagged servers, progress counters in shared memory, PSS of a
// process tree, percentiles.

const SLOT = 32;
const TASK_WORKERS = 8;

final class Bench
{
    public static string $dir;      // scratch directory of this run
    public static string $tag;      // every process we start carries TASKQ_BENCH_TAG=$tag
    public static array $php;       // [PHP_BINARY, -d extension=...]
    /** @var list<array{proc: resource, pid: int}> every child still to reap */
    public static array $children = [];

    public static function init(): void
    {
        self::$tag = getenv('TASKQ_BENCH_TAG') ?: ('b' . getmypid() . bin2hex(random_bytes(3)));
        putenv('TASKQ_BENCH_TAG=' . self::$tag);
        self::$dir = sys_get_temp_dir() . '/taskq-bench-' . self::$tag;
        @mkdir(self::$dir, 0700, true);
        $ext = getenv('TASKQ_EXT') ?: dirname(__DIR__) . '/modules/taskq.so';
        self::$php = [PHP_BINARY, '-d', "extension=$ext", '-d', 'memory_limit=-1'];
        register_shutdown_function([self::class, 'cleanup']);
        if (function_exists('pcntl_signal')) {
            pcntl_async_signals(true);
            foreach ([SIGINT, SIGTERM, SIGHUP] as $sig) {
                pcntl_signal($sig, function () {
                    fwrite(STDERR, "\nbench: interrupted; stopping everything it started\n");
                    exit(130);
                });
            }
        }
    }

    /** Environment for a child: ours plus $extra. */
    public static function env(array $extra = []): array
    {
        $env = getenv();
        $env['TASKQ_BENCH_TAG'] = self::$tag;
        return array_merge($env, array_map('strval', $extra));
    }

    /** Starts $cmd (argv list) with output to $log; returns [proc, pid]. */
    public static function spawn(array $cmd, array $env = [], ?string $log = null, array $pipes = []): array
    {
        $log ??= '/dev/null';
        $spec = $pipes + [0 => ['file', '/dev/null', 'r'], 1 => ['file', $log, 'a'], 2 => ['file', $log, 'a']];
        ksort($spec);
        $proc = proc_open($cmd, $spec, $p, null, self::env($env));
        if (!is_resource($proc)) {
            throw new RuntimeException('cannot start ' . implode(' ', $cmd));
        }
        $pid = proc_get_status($proc)['pid'];
        self::$children[$pid] = ['proc' => $proc, 'pid' => $pid];
        return ['proc' => $proc, 'pid' => $pid, 'pipes' => $p];
    }

    /** SIGTERM, then SIGKILL for the whole tree after $grace seconds. */
    public static function stop(array $child, float $grace = 5.0): void
    {
        $pid = $child['pid'];
        $tree = self::tree($pid);
        @posix_kill($pid, SIGTERM);
        $deadline = microtime(true) + $grace;
        while (microtime(true) < $deadline && proc_get_status($child['proc'])['running']) {
            usleep(10000);
        }
        foreach (array_merge($tree, self::tree($pid)) as $p) {
            @posix_kill($p, SIGKILL);
        }
        foreach ($child['pipes'] ?? [] as $pipe) {
            @fclose($pipe);
        }
        proc_close($child['proc']);
        unset(self::$children[$pid]);
        // Workers die with the master (PDEATHSIG); wait until they are gone.
        $deadline = microtime(true) + 3;
        while (microtime(true) < $deadline && array_filter($tree, fn ($p) => self::alive($p))) {
            usleep(10000);
        }
    }

    /** The fields of /proc/PID/stat after the command name (index 0 = state), or null. */
    public static function procStat(int $pid): ?array
    {
        $s = @file_get_contents("/proc/$pid/stat");
        if ($s === false) {
            return null;
        }
        return preg_split('/\s+/', trim(substr($s, strrpos($s, ')') + 2)));
    }

    public static function alive(int $pid): bool
    {
        $stat = @file_get_contents("/proc/$pid/stat");
        return $stat !== false && !preg_match('/\) [ZX] /', $stat);
    }

    /** $pid and all its descendants. */
    public static function tree(int $pid): array
    {
        $children = [];
        foreach (glob('/proc/[0-9]*/stat') ?: [] as $f) {
            $s = @file_get_contents($f);
            if ($s !== false && preg_match('/\) \S (\d+)/', $s, $m)) {
                $children[(int) $m[1]][] = (int) basename(dirname($f));
            }
        }
        $out = [];
        $todo = [$pid];
        while ($todo) {
            $p = array_pop($todo);
            if (!self::alive($p)) {
                continue;
            }
            $out[] = $p;
            foreach ($children[$p] ?? [] as $c) {
                $todo[] = $c;
            }
        }
        return $out;
    }

    /** Every live process carrying our tag, except ourselves. */
    public static function tagged(): array
    {
        $needle = 'TASKQ_BENCH_TAG=' . self::$tag . "\0";
        $pids = [];
        foreach (glob('/proc/[0-9]*', GLOB_ONLYDIR) ?: [] as $dir) {
            $pid = (int) basename($dir);
            if ($pid === getmypid()) {
                continue;
            }
            $env = @file_get_contents("$dir/environ");
            if ($env !== false && str_contains($env . "\0", $needle) && self::alive($pid)) {
                $pids[] = $pid;
            }
        }
        return $pids;
    }

    /** Kills everything we started (on exit, normal or not). */
    public static function cleanup(): void
    {
        foreach (self::$children as $c) {
            foreach (self::tree($c['pid']) as $p) {
                @posix_kill($p, SIGKILL);
            }
        }
        for ($i = 0; $i < 50; $i++) {
            $left = self::tagged();
            if (!$left) {
                break;
            }
            foreach ($left as $p) {
                @posix_kill($p, SIGKILL);
            }
            usleep(20000);
        }
        foreach (self::$children as $c) {
            @proc_close($c['proc']);
        }
        self::$children = [];
        foreach (Shm::$created as $shm) {
            @shmop_delete($shm);
        }
        if (getenv('BENCH_KEEP') !== '1' && is_dir(self::$dir)) {
            exec('rm -rf ' . escapeshellarg(self::$dir));
        }
    }

    /** Summed PSS (bytes) of $pid's process tree, and the per-process list. */
    public static function pss(int $pid): array
    {
        $total = 0;
        $each = [];
        $anon = 0;
        foreach (self::tree($pid) as $p) {
            $s = @file_get_contents("/proc/$p/smaps_rollup");
            if ($s !== false && preg_match('/^Pss:\s+(\d+) kB/m', $s, $m)) {
                $total += (int) $m[1] * 1024;
                $each[$p] = (int) $m[1] * 1024;
                $anon += preg_match('/^Pss_Anon:\s+(\d+) kB/m', $s, $a) ? (int) $a[1] * 1024 : 0;
            }
        }
        return [$total, $each, $anon];
    }

    public static function freePort(): int
    {
        $s = stream_socket_server('tcp://127.0.0.1:0');
        $name = stream_socket_get_name($s, false);
        fclose($s);
        return (int) substr($name, strrpos($name, ':') + 1);
    }

    /** Waits until $cond() is truthy; returns its value, or throws after $timeout s. */
    public static function waitFor(callable $cond, float $timeout, string $what, int $pollUs = 1000)
    {
        $deadline = microtime(true) + $timeout;
        while (true) {
            $v = $cond();
            if ($v) {
                return $v;
            }
            if (microtime(true) > $deadline) {
                throw new RuntimeException("timed out after {$timeout}s waiting for $what");
            }
            usleep($pollUs);
        }
    }

    public static function payload(int $i): string
    {
        // The seed's email task, about 300 bytes of JSON.
        return json_encode([
            'from_email' => 'shop@example.com',
            'to_email' => sprintf('customer%07d@example.com', $i % 10000000),
            'title' => sprintf('Your order #%07d has shipped', $i % 10000000),
            'content' => 'Thank you for your order. Your parcel left our warehouse today and '
                . 'should arrive within two working days. Track it in your account.',
            'headers' => ['X-Order' => (string) $i],
        ]);
    }
}

/** The progress segment bench/server.php writes (one 32-byte slot per worker id). */
final class Shm
{
    public static array $created = [];
    public $shm;
    public int $key;

    public function __construct(int $size = SLOT * 64)
    {
        for ($i = 0; $i < 20; $i++) {
            $this->key = random_int(0x10000000, 0x7ffffff0);
            $shm = @shmop_open($this->key, 'n', 0600, $size);
            if ($shm !== false) {
                $this->shm = $shm;
                self::$created[] = $shm;
                return;
            }
        }
        throw new RuntimeException('cannot create a shared memory segment');
    }

    public function slot(int $worker): array
    {
        return unpack('Jpid/Jcount/Jlast/Jfailed', shmop_read($this->shm, $worker * SLOT, SLOT));
    }

    /** [count, last hrtime, failed] summed over $workers. */
    public function sum(array $workers): array
    {
        $count = $failed = $last = 0;
        foreach ($workers as $w) {
            $s = $this->slot($w);
            $count += $s['count'];
            $failed += $s['failed'];
            $last = max($last, $s['last']);
        }
        return [$count, $last, $failed];
    }

    public function read(int $offset, int $len): string
    {
        return shmop_read($this->shm, $offset, $len);
    }

    public function delete(): void
    {
        @shmop_delete($this->shm);
        self::$created = array_filter(self::$created, fn ($s) => $s !== $this->shm);
    }
}

/** A bench/server.php instance. */
final class TaskqServer
{
    public array $child;
    public Shm $shm;
    public int $port = 0;
    public ?string $unix = null;
    public int $pid;
    public string $log;
    public ?Shm $lat = null;
    public ?string $store = null;
    public string $host = '127.0.0.1';
    public int $taskWorkers = TASK_WORKERS;

    /**
     * @param array $opts unix (bool), count_tasks, store (bool), mail_dsn, lat_slots,
     *                    host (listen address), task_workers (count), backend (Redis DSN),
     *                    queue (task_queue), task_sleep_us (onTask sleeps first),
     *                    task_spin (onTask runs bench_spin() this many rounds),
     *                    queue_max (task_queue_max)
     */
    public function __construct(string $name, array $opts = [])
    {
        $this->shm = new Shm();
        $dir = Bench::$dir;
        $this->log = "$dir/$name.log";
        $portFile = "$dir/$name.port";
        @unlink($portFile);
        $this->host = $opts['host'] ?? '127.0.0.1';
        $this->taskWorkers = $opts['task_workers'] ?? TASK_WORKERS;
        $env = ['BENCH_SHM_KEY' => $this->shm->key, 'BENCH_PORT_FILE' => $portFile, 'BENCH_LOG' => $this->log,
            'BENCH_HOST' => $this->host, 'BENCH_TASK_WORKERS' => $this->taskWorkers];
        if (!empty($opts['backend'])) {
            $env['BENCH_BACKEND'] = $opts['backend'];
            $env['BENCH_QUEUE'] = $opts['queue'] ?? 'bench';
        }
        if (!empty($opts['task_sleep_us'])) {
            $env['BENCH_TASK_SLEEP_US'] = $opts['task_sleep_us'];
        }
        if (!empty($opts['task_spin'])) {
            $env['BENCH_TASK_SPIN'] = $opts['task_spin'];
        }
        if (!empty($opts['unix'])) {
            $this->unix = "$dir/$name.sock";
            $env['BENCH_UNIX'] = $this->unix;
        }
        if (!empty($opts['count_tasks'])) {
            $env['BENCH_COUNT_TASKS'] = '1';
        }
        if (!empty($opts['store'])) {
            // On the same disk as the rest (ext4 here), not tmpfs: the sync must be real.
            $this->store = (getenv('BENCH_STORE_DIR') ?: '/var/tmp') . '/taskq-bench-store-' . Bench::$tag . "-$name";
            exec('rm -rf ' . escapeshellarg($this->store));
            $env['BENCH_STORE'] = $this->store;
        }
        if (isset($opts['queue_max'])) {
            $env['BENCH_QUEUE_MAX'] = (string) $opts['queue_max'];
        }
        if (!empty($opts['mail_dsn'])) {
            $env['BENCH_MAIL_DSN'] = $opts['mail_dsn'];
        }
        if (!empty($opts['lat_slots'])) {
            $this->lat = new Shm($opts['lat_slots'] * 16);
            $env['BENCH_LAT_SHM_KEY'] = $this->lat->key;
        }
        $this->child = Bench::spawn(array_merge(Bench::$php, [__DIR__ . '/server.php']), $env, $this->log);
        $this->pid = $this->child['pid'];
        Bench::waitFor(function () use ($portFile) {
            if (!proc_get_status($this->child['proc'])['running']) {
                throw new RuntimeException("server $this->log exited at start:\n" . @file_get_contents($this->log));
            }
            foreach (range(0, $this->taskWorkers) as $w) {
                if ($this->shm->slot($w)['pid'] === 0) {
                    return false;
                }
            }
            return $this->unix !== null ? file_exists($this->unix) : file_exists($portFile);
        }, 20, "server $name to start", 5000);
        if ($this->unix === null) {
            $this->port = (int) file_get_contents($portFile);
        }
    }

    public function client(int $flags = 0, float $timeout = 5.0): TaskClient
    {
        $c = new TaskClient(($this->unix !== null ? TASKQ_SOCK_UNIX_STREAM : TASKQ_SOCK_TCP) | $flags);
        if (!$c->connect($this->unix ?? $this->host, $this->port, $timeout)) {
            throw new RuntimeException("connect failed: $c->errMsg");
        }
        return $c;
    }

    /** stats(), asked through the event worker. */
    public function stats(?TaskClient $ctl = null): array
    {
        $c = $ctl ?? $this->client();
        $c->send("\0stats");
        $r = $c->recv();
        if (!$ctl) {
            $c->close();
        }
        return json_decode((string) $r, true) ?: [];
    }

    /** Waits until the counters of $workers reach $target; returns [last hrtime, failed]. */
    public function waitCount(array $workers, int $target, float $timeout = 120): array
    {
        $r = Bench::waitFor(function () use ($workers, $target) {
            [$n, $last, $failed] = $this->shm->sum($workers);
            return $n + $failed >= $target ? [$last, $failed, $n] : null;
        }, $timeout, "$target events on worker(s) " . implode(',', $workers) . " (log: $this->log)");
        return $r;
    }

    public function counted(array $workers): int
    {
        [$n, , $failed] = $this->shm->sum($workers);
        return $n + $failed;
    }

    /**
     * [VmRSS, VmHWM, RssAnon] of the master process in bytes
     * (/proc/PID/status), read at one instant; RssAnon is its heap and
     * stacks, without the code it paged in.
     */
    public function masterRss(): array
    {
        $s = (string) @file_get_contents("/proc/$this->pid/status");
        $kb = fn (string $k) => preg_match("/^$k:\\s+(\\d+) kB/m", $s, $m) ? (int) $m[1] * 1024 : 0;
        return [$kb('VmRSS'), $kb('VmHWM'), $kb('RssAnon')];
    }

    /** Task workers of this server, as progress slot numbers. */
    public function taskSlots(): array
    {
        return $this->taskWorkers > 0 ? range(1, $this->taskWorkers) : [];
    }

    /** Summed PSS (bytes) of the process tree, and per role. */
    public function pssByRole(): array
    {
        [$total, $each, $anon] = Bench::pss($this->pid);
        $roles = ['total' => $total, 'anon' => $anon, 'master' => $each[$this->pid] ?? 0, 'manager' => 0, 'worker' => 0, 'task_workers' => 0];
        $worker = $this->shm->slot(0)['pid'];
        $taskPids = array_map(fn ($w) => $this->shm->slot($w)['pid'], range(1, TASK_WORKERS));
        foreach ($each as $pid => $bytes) {
            if ($pid === $this->pid) {
                continue;
            }
            $role = $pid === $worker ? 'worker' : (in_array($pid, $taskPids, true) ? 'task_workers' : 'manager');
            $roles[$role] += $bytes;
        }
        $roles['processes'] = count($each);
        return $roles;
    }

    /**
     * CPU seconds (utime + stime, /proc/PID/stat) the master and the
     * manager used so far: what dispatching costs, apart from the workers.
     */
    public function dispatchCpu(): array
    {
        $cpu = fn (int $pid) => ($f = Bench::procStat($pid)) ? ($f[11] + $f[12]) / 100 : 0.0;
        $workers = array_map(fn ($w) => $this->shm->slot($w)['pid'], range(0, $this->taskWorkers));
        $manager = 0.0;
        foreach (Bench::tree($this->pid) as $p) {
            if ($p !== $this->pid && !in_array($p, $workers, true)) {
                $manager += $cpu($p);
            }
        }
        return ['master' => $cpu($this->pid), 'manager' => $manager];
    }

    public function stop(): void
    {
        Bench::stop($this->child);
        $this->shm->delete();
        $this->lat?->delete();
        if ($this->store !== null) {
            exec('rm -rf ' . escapeshellarg($this->store));
        }
    }
}

function percentile(array $sorted, float $p): float
{
    $n = count($sorted);
    if ($n === 0) {
        return NAN;
    }
    $i = (int) ceil($p / 100 * $n) - 1;
    return (float) $sorted[max(0, min($n - 1, $i))];
}

function median(array $xs): float
{
    $xs = array_values(array_filter($xs, fn ($x) => $x !== null && !is_nan((float) $x)));
    if (!$xs) {
        return NAN;
    }
    sort($xs);
    $n = count($xs);
    return $n % 2 ? (float) $xs[intdiv($n, 2)] : ($xs[$n / 2 - 1] + $xs[$n / 2]) / 2;
}
