<?php
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;

/**
 * The user's article scripts, byte for byte: Server.php daemonizes on
 * 0.0.0.0:9501 with swoole_server, Client_test.php sends an array with
 * swoole_client and prints "success".
 */
final class SeedTest extends TaskqTestCase
{
    private const SEED = __DIR__ . '/../../shared/seed';

    private function seedDir(): string
    {
        $dir = getenv('TASKQ_SEED_DIR') ?: self::SEED;
        if (!is_file("$dir/Server.php")) {
            $this->fail("seed scripts not found in $dir (set TASKQ_SEED_DIR)");
        }
        return $dir;
    }

    private function startDaemon(string $script): ServerProcess
    {
        $this->assertFalse(self::listening(9501), 'port 9501 is already in use; the seed needs it');
        $server = new ServerProcess($script, $this->dir);
        $this->servers[] = $server;
        $this->assertSame(0, $server->wait(10), 'the launching process exits once the server daemonized');
        $this->assertStringContainsString(
            "unsupported option 'task_ipc_mode ', did you mean 'task_ipc_mode'?",
            $server->stderr(),
        );
        $this->waitUntil(fn () => self::listening(9501), 10, 'port 9501', $server);
        // master + manager + 1 worker + 8 task workers
        $this->waitUntil(fn () => count($server->tree()) === 11, 10, '11 server processes', $server);
        return $server;
    }

    private function master(ServerProcess $server): int
    {
        $tree = $server->tree();
        foreach ($tree as $pid) {
            $ppid = (int) preg_replace('/^.*\) \S+ (\d+) .*$/s', '$1', file_get_contents("/proc/$pid/stat"));
            if (!in_array($ppid, $tree, true)) {
                return $pid;
            }
        }
        $this->fail('no master process found');
    }

    public function testSeedScriptsRunUnchanged(): void
    {
        $seed = $this->seedDir();
        copy("$seed/Server.php", "$this->dir/Server.php");
        copy("$seed/Client_test.php", "$this->dir/Client_test.php");
        $this->assertFileEquals("$seed/Server.php", "$this->dir/Server.php");

        $server = $this->startDaemon("$this->dir/Server.php");
        [$code, $out, $err] = $this->runScript("$this->dir/Client_test.php", 10);
        $this->assertSame(0, $code, $err);
        $this->assertSame('success', $out);
        $this->assertSame('', $err);

        $this->stopServer($server, SIGTERM, $this->master($server));
        $this->assertSame([], $server->tree());
        $this->waitUntil(fn () => !self::listening(9501), 1, 'port 9501 to be free again');
    }

    public function testTheClientsArrayReachesOnTaskAsTheDecodedArray(): void
    {
        $seed = $this->seedDir();
        $source = file_get_contents("$seed/Server.php");
        $record = "file_put_contents(__DIR__ . '/sent.jsonl', json_encode(['type' => gettype(\$data), 'data' => \$data]) . \"\\n\", FILE_APPEND | LOCK_EX);\n        return true;";
        $copy = str_replace("//to do send email\n        return true;", $record, $source, $count);
        $this->assertSame(1, $count, 'the recording copy differs from the seed only in sendEmail()');
        file_put_contents("$this->dir/Server.php", $copy);
        copy("$seed/Client_test.php", "$this->dir/Client_test.php");

        $server = $this->startDaemon("$this->dir/Server.php");
        for ($i = 0; $i < 3; $i++) {
            [$code, $out] = $this->runScript("$this->dir/Client_test.php", 10);
            $this->assertSame([0, 'success'], [$code, $out]);
        }
        $lines = $this->waitUntil(function () {
            $f = "$this->dir/sent.jsonl";
            $l = is_file($f) ? file($f, FILE_IGNORE_NEW_LINES) : [];
            return count($l) >= 3 ? $l : null;
        }, 10, 'three emails recorded by onTask', $server);
        $expected = ['from_email' => 'xxx.@qq.com', 'to_email' => 'xx.@163.com', 'title' => '', 'content' => ''];
        foreach ($lines as $line) {
            $this->assertSame(['type' => 'array', 'data' => $expected], json_decode($line, true));
        }
        $this->stopServer($server, SIGTERM, $this->master($server));
    }
}
