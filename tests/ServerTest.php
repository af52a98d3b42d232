<?php
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;

/**
 * TaskServer's constructor, set(), on(), start() checks, task()/finish(),
 * send()/close(), connection events and the worker properties, each against
 * a real server (or, for what only binds/validates, in this process).
 */
final class ServerTest extends TaskqTestCase
{
    /** Helpers prepended to every server script after the prelude. */
    private const HELPERS = <<<'PHP'
/** Runs $fn and returns [its result, the warnings it raised as [errno, message]]. */
function capture(callable $fn): array
{
    $w = [];
    set_error_handler(function (int $no, string $str) use (&$w) {
        $w[] = [$no, $str];
        return true;
    });
    try {
        $r = $fn();
    } finally {
        restore_error_handler();
    }
    return [$r, $w];
}

PHP;

    // ---------------------------------------------------------------- helpers

    /** Runs $fn in this process and returns [result, [[errno, message], ...]]. */
    private function captureWarnings(callable $fn): array
    {
        $warnings = [];
        set_error_handler(function (int $no, string $str) use (&$warnings) {
            $warnings[] = [$no, $str];
            return true;
        });
        try {
            $result = $fn();
        } finally {
            restore_error_handler();
        }
        return [$result, $warnings];
    }

    private function serve(string $body, array $env = []): ServerProcess
    {
        return $this->startServer(self::HELPERS . $body, $env);
    }

    /**
     * Runs a TaskClient script connected to the last server's port ($c is the
     * connected client); asserts it exits 0 with empty stderr; returns stdout.
     */
    /** Parent pid of $pid from /proc. */
    private static function ppid(int $pid): int
    {
        $stat = (string) @file_get_contents("/proc/$pid/stat");
        return (int) preg_replace('/^.*\) \S+ (\d+) .*$/s', '$1', $stat);
    }

    private static function hexOf(string $s): string
    {
        return bin2hex($s);
    }

    // ---------------------------------------------------------------- constructor

    public function testPortZeroGivesAKernelChosenPortThatListens(): void
    {
        $server = new TaskServer('127.0.0.1', 0);
        try {
            $port = $server->port;
            $this->assertIsInt($port);
            $this->assertGreaterThan(0, $port);
            $this->assertLessThanOrEqual(65535, $port);
            $this->assertSame('127.0.0.1', $server->host);
            $this->assertSame(TASKQ_PROCESS, $server->mode);
            $this->assertSame(TASKQ_SOCK_TCP, $server->type);
            $this->assertSame(-1, $server->worker_id, 'worker_id is -1 outside any worker');
            $this->assertFalse($server->taskworker);
            $this->assertTrue(self::listening($port), 'the constructor binds and listens');
        } finally {
            unset($server);
        }
    }

    public function testAddressInUseThrowsWithErrno98AndNamesTheAddress(): void
    {
        $holder = stream_socket_server('tcp://127.0.0.1:0', $errno, $errstr);
        $this->assertNotFalse($holder);
        $name = stream_socket_get_name($holder, false);
        $port = (int) substr($name, strrpos($name, ':') + 1);
        try {
            new TaskServer('127.0.0.1', $port);
            $this->fail('constructing a server on a port in use must throw');
        } catch (TaskQ\Exception $e) {
            $this->assertSame(98, $e->getCode());
            $this->assertStringContainsString("failed to listen server port[127.0.0.1:$port]", $e->getMessage());
            $this->assertStringContainsString('[98]', $e->getMessage());
            $this->assertInstanceOf(RuntimeException::class, $e);
        } finally {
            fclose($holder);
        }
    }

    public function testAnUnresolvableHostThrowsNamingTheHost(): void
    {
        try {
            new TaskServer('no-such-host.invalid', 0);
            $this->fail('a host that does not resolve must throw');
        } catch (TaskQ\Exception $e) {
            $this->assertStringContainsString('no-such-host.invalid', $e->getMessage());
        }
        try {
            new TaskServer('256.1.1.1', 0);
            $this->fail('an invalid IPv4 address must throw');
        } catch (TaskQ\Exception $e) {
            $this->assertStringContainsString('256.1.1.1', $e->getMessage());
        }
    }

    public function testABadModeThrows(): void
    {
        try {
            new TaskServer('127.0.0.1', 0, 7);
            $this->fail('mode 7 must be rejected');
        } catch (TaskQ\Exception $e) {
            $this->assertStringContainsString('invalid $mode parameter 7', $e->getMessage());
            $this->assertStringContainsString('allowed', $e->getMessage());
        }
    }

    public function testABadSockTypeThrows(): void
    {
        foreach ([99, 2 /* UDP: not supported */, 0] as $type) {
            try {
                new TaskServer('127.0.0.1', 0, TASKQ_PROCESS, $type);
                $this->fail("sock type $type must be rejected");
            } catch (TaskQ\Exception $e) {
                $this->assertStringStartsWith('invalid $sock_type ' . $type . ' (allowed: ', $e->getMessage());
            }
        }
    }

    public function testAPortOutOfRangeThrows(): void
    {
        foreach ([65536, 70000, -1] as $port) {
            try {
                new TaskServer('127.0.0.1', $port);
                $this->fail("port $port must be rejected");
            } catch (TaskQ\Exception $e) {
                $this->assertStringContainsString("invalid port $port", $e->getMessage());
            }
        }
    }

    // ---------------------------------------------------------------- set()

    public function testTheSeedsTrailingSpaceOptionWarnsWithASuggestion(): void
    {
        $server = new TaskServer('127.0.0.1', 0);
        [$ret, $warnings] = $this->captureWarnings(fn () => $server->set([
            'worker_num' => 1,
            'task_worker_num' => 8,
            'task_ipc_mode ' => 3,
        ]));
        $this->assertTrue($ret);
        $this->assertSame(
            [[E_WARNING, "TaskQ\\Server::set(): unsupported option 'task_ipc_mode ', did you mean 'task_ipc_mode'?"]],
            $warnings,
        );
        $this->assertSame(3, $server->setting['task_ipc_mode '], 'the unknown key is kept in $setting');
        $this->assertArrayNotHasKey('task_ipc_mode', $server->setting, 'the misspelt key does not set the real option');
        unset($server);
    }

    public function testAnUnknownOptionWithoutNearMatchWarnsListingTheKnownOptions(): void
    {
        $server = new TaskServer('127.0.0.1', 0);
        [$ret, $warnings] = $this->captureWarnings(fn () => $server->set(['zzqqxx_frobnicate' => 1]));
        $this->assertTrue($ret);
        $this->assertCount(1, $warnings);
        [$no, $msg] = $warnings[0];
        $this->assertSame(E_WARNING, $no);
        $this->assertStringStartsWith("TaskQ\\Server::set(): unsupported option 'zzqqxx_frobnicate' (known options: ", $msg);
        $this->assertStringNotContainsString('did you mean', $msg);
        foreach (['worker_num', 'task_worker_num', 'daemonize', 'log_file', 'pid_file', 'task_ipc_mode', 'max_request'] as $known) {
            $this->assertStringContainsString($known, $msg);
        }
        $this->assertSame(1, $server->setting['zzqqxx_frobnicate']);
        unset($server);
    }

    public static function invalidOptionValues(): array
    {
        return [
            'negative worker_num' => ['worker_num', -3, '-3'],
            'worker_num over max' => ['worker_num', 1001, '1001'],
            'negative task_worker_num' => ['task_worker_num', -1, '-1'],
            'dispatch_mode 9' => ['dispatch_mode', 9, '9'],
            'dispatch_mode 0' => ['dispatch_mode', 0, '0'],
            'task_ipc_mode 7' => ['task_ipc_mode', 7, '7'],
            'log_level 99' => ['log_level', 99, '99'],
            'negative max_request' => ['max_request', -5, '-5'],
            'worker_num string' => ['worker_num', 'lots', 'lots'],
            'task_window 0' => ['task_window', 0, '0'],
            'task_window over max' => ['task_window', 1025, '1025'],
        ];
    }

    /** @dataProvider invalidOptionValues */
    public function testAnInvalidOptionValueThrowsNamingOptionValueAndAllowed(string $key, mixed $value, string $shown): void
    {
        $server = new TaskServer('127.0.0.1', 0);
        try {
            $server->set([$key => $value]);
            $this->fail("$key => " . var_export($value, true) . ' must be rejected');
        } catch (TaskQ\Exception $e) {
            $msg = $e->getMessage();
            $this->assertStringContainsString("invalid value for option '$key'", $msg);
            $this->assertStringContainsString($shown, $msg);
            $this->assertStringContainsString('allowed', $msg);
        } finally {
            unset($server);
        }
    }

    public function testTheInvalidValueMessageHasTheDocumentedShape(): void
    {
        $server = new TaskServer('127.0.0.1', 0);
        try {
            $server->set(['worker_num' => -3]);
            $this->fail('worker_num -3 must be rejected');
        } catch (TaskQ\Exception $e) {
            $this->assertSame("invalid value for option 'worker_num': -3 (allowed: an integer from 1 to 1000)", $e->getMessage());
        }
        unset($server);
    }

    public function testEnableCoroutineTrueThrowsAndFalseIsAccepted(): void
    {
        $server = new TaskServer('127.0.0.1', 0);
        try {
            $server->set(['enable_coroutine' => true]);
            $this->fail('enable_coroutine => true must throw');
        } catch (TaskQ\Exception $e) {
            $this->assertStringStartsWith("option 'enable_coroutine' is not supported", $e->getMessage());
        }
        [$ret, $warnings] = $this->captureWarnings(fn () => $server->set(['enable_coroutine' => false]));
        $this->assertTrue($ret);
        $this->assertSame([], $warnings);
        unset($server);
    }

    public function testSettingMergesEverySetCallAndKeepsUnknownKeys(): void
    {
        $server = new TaskServer('127.0.0.1', 0);
        [, $warnings] = $this->captureWarnings(function () use ($server) {
            $this->assertTrue($server->set(['worker_num' => 2, 'daemonize' => 0, 'my_app_key' => 'x']));
            $this->assertTrue($server->set(['task_worker_num' => 3, 'worker_num' => 4]));
            $this->assertTrue($server->set(['max_request' => 100]));
        });
        $this->assertCount(1, $warnings, 'only my_app_key warns');
        $setting = $server->setting;
        $this->assertSame(4, $setting['worker_num'], 'a later set() overrides');
        $this->assertSame(0, $setting['daemonize']);
        $this->assertSame('x', $setting['my_app_key']);
        $this->assertSame(3, $setting['task_worker_num']);
        $this->assertSame(100, $setting['max_request']);
        unset($server);
    }

    public function testSettingEchoesKeyedArraysWithTheirKeysAndStringsByteExact(): void
    {
        $server = new TaskServer('127.0.0.1', 0);
        $given = [
            'task_allowed_classes' => ['mail' => 'App\\Mail', 7 => 'App\\Sms'],
            'package_eof' => "\r\n",
            'my_app_key' => ['db' => ['host' => 'x', 'ports' => [5432, 5433]], 3 => "\xff\xfe"],
            'my_binary' => "caf\xe9",
        ];
        [$ret, $warnings] = $this->captureWarnings(fn () => $server->set($given));
        $this->assertTrue($ret);
        $this->assertCount(2, $warnings, 'my_app_key and my_binary warn');
        $setting = $server->setting;
        foreach ($given as $key => $value) {
            $this->assertSame($value, $setting[$key], "$key is echoed as given");
        }
        $this->assertSame([7, 'db', 3], [array_keys($setting['task_allowed_classes'])[1], ...array_keys($setting['my_app_key'])]);
        unset($server);
    }

    public function testAnObjectDeepInsideAKeyedOptionValueIsRefusedAndNotKept(): void
    {
        $server = new TaskServer('127.0.0.1', 0);
        try {
            $server->set(['my_app_key' => ['db' => ['conn' => new stdClass()]]]);
            $this->fail('an object inside an option value must be refused');
        } catch (TaskQ\Exception $e) {
            $this->assertSame("invalid value for option 'my_app_key': an object or resource (allowed: scalars and arrays)", $e->getMessage());
        }
        $this->assertArrayNotHasKey('my_app_key', $server->setting);
        unset($server);
    }

    // ---------------------------------------------------------------- on()

    public function testOnAcceptsAnyCaseAndTheOnPrefix(): void
    {
        $server = new TaskServer('127.0.0.1', 0);
        [, $warnings] = $this->captureWarnings(function () use ($server) {
            foreach (['receive', 'RECEIVE', 'onReceive', 'onreceive', 'Task', 'ONTASK', 'finish', 'WorkerStart', 'workerstop', 'onConnect', 'close', 'start', 'Shutdown'] as $name) {
                $this->assertTrue($server->on($name, function () {}), "on('$name') registers");
            }
        });
        $this->assertSame([], $warnings);
        unset($server);
    }

    public function testOnFormsRegisterCallbacksThatActuallyFire(): void
    {
        $this->serve(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'task_worker_num' => 1]);
$server->on('onreceive', function ($s, $fd, $rid, $data) { record('receive', ['data' => $data]); $s->task($data); });
$server->on('ONTASK', function ($s, $id, $src, $data) { record('task', ['data' => $data]); return "done:$data"; });
$server->on('onFinish', function ($s, $id, $data) { record('finish', ['data' => $data]); });
$server->on('workerSTART', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->start();
PHP);
        $this->waitEvents('workerstart', 2);
        $this->client('$c->send("hello");');
        $finish = $this->waitEvents('finish', 1);
        $this->assertSame('hello', $this->events('receive')[0]['data']);
        $this->assertSame('hello', $this->events('task')[0]['data']);
        $this->assertSame('done:hello', $finish[0]['data']);
    }

    public function testOnAnUnknownEventWarnsListingKnownEventsAndReturnsFalse(): void
    {
        $server = new TaskServer('127.0.0.1', 0);
        [$ret, $warnings] = $this->captureWarnings(fn () => $server->on('Foo', function () {}));
        $this->assertFalse($ret);
        $this->assertCount(1, $warnings);
        [$no, $msg] = $warnings[0];
        $this->assertSame(E_WARNING, $no);
        $this->assertStringStartsWith('TaskQ\Server::on(): unknown event types[Foo]', $msg);
        $this->assertStringContainsString('known events: ', $msg);
        foreach (['Start', 'Shutdown', 'WorkerStart', 'WorkerStop', 'Connect', 'Receive', 'Close', 'Task', 'Finish'] as $event) {
            $this->assertStringContainsString($event, $msg);
        }
        unset($server);
    }

    /** As PHP's own functions reject a bad `callable` argument (issue 13.1). */
    public function testOnWithANonCallableThrowsPhpsTypeError(): void
    {
        $server = new TaskServer('127.0.0.1', 0);
        foreach (['no_such_function_anywhere', 42, [new stdClass(), 'nope']] as $bad) {
            try {
                $server->on('Receive', $bad);
                $this->fail('a non-callable must be rejected: ' . var_export($bad, true));
            } catch (TypeError $e) {
                $this->assertStringStartsWith('TaskQ\Server::on(): Argument #2 ($callback) must be a valid callback, ', $e->getMessage());
            }
        }
        unset($server);
    }

    // ---------------------------------------------------------------- start() checks

    private function assertStartFailsBeforeForking(string $setup, string $expected): void
    {
        $script = <<<'PHP'
$t = microtime(true);
$server = new TaskServer('127.0.0.1', $port);
%SETUP%
try {
    $server->start();
    echo "start returned\n";
} catch (TaskQ\Exception $e) {
    echo get_class($e), ': ', $e->getMessage(), "\n";
}
$children = [];
foreach (glob('/proc/[0-9]*/stat') as $f) {
    $stat = @file_get_contents($f);
    if ($stat !== false && (int) preg_replace('/^.*\) \S+ (\d+) .*$/s', '$1', $stat) === getmypid()) {
        $children[] = $f;
    }
}
echo 'children=', count($children), "\n";
PHP;
        $server = $this->startServer(str_replace('%SETUP%', $setup, $script), [], false);
        $code = $server->wait(5);
        $this->assertNotNull($code, 'the script ends quickly');
        $this->assertSame(0, $code, $server->stderr());
        $out = $server->stdout();
        $this->assertStringContainsString('TaskQ\Exception: ' . $expected, $out);
        $this->assertStringNotContainsString('start returned', $out);
        $this->assertStringContainsString("children=0\n", $out, 'no process was forked');
        $this->assertSame([], $server->tree(), 'no tagged process is left');
        $this->assertSame([], $this->events(), 'no callback ran');
    }

    public function testStartWithTaskWorkersButNoTaskCallbackThrowsBeforeForking(): void
    {
        $this->assertStartFailsBeforeForking(<<<'PHP'
$server->set(['worker_num' => 2, 'task_worker_num' => 2]);
$server->on('Receive', function () {});
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
PHP, "require 'onTask' callback");
    }

    public function testStartWithoutReceiveCallbackThrowsBeforeForking(): void
    {
        $this->assertStartFailsBeforeForking(<<<'PHP'
$server->set(['worker_num' => 1]);
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
PHP, "require 'onReceive' callback");
    }

    // ---------------------------------------------------------------- task()

    public function testTaskIdsStartAtZeroAndIncreasePerWorker(): void
    {
        $this->serve(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 2, 'task_worker_num' => 2, 'dispatch_mode' => 1]);
$server->on('Receive', function ($s, $fd, $rid, $data) {
    $ids = [];
    for ($i = 0; $i < 3; $i++) {
        $ids[] = $s->task("$data/$i");
    }
    record('dispatched', ['worker' => $s->worker_id, 'ids' => $ids]);
});
$server->on('Task', function ($s, $id, $src, $data) {
    record('task', ['id' => $id, 'src' => $src, 'data' => $data]);
});
$server->on('Finish', function () {});
$server->start();
PHP);
        $this->client('foreach ([1, 2, 3, 4] as $m) { $c->send("m$m"); }');
        $dispatched = $this->waitEvents('dispatched', 4);
        $tasks = $this->waitEvents('task', 12);

        $perWorker = [];
        foreach ($dispatched as $d) {
            foreach ($d['ids'] as $id) {
                $this->assertIsInt($id, 'task() returns an int id');
                $perWorker[$d['worker']][] = $id;
            }
        }
        ksort($perWorker);
        $this->assertSame([0, 1], array_keys($perWorker), 'round-robin dispatch_mode used both event workers');
        foreach ($perWorker as $worker => $ids) {
            $this->assertSame(range(0, count($ids) - 1), $ids, "ids of worker $worker count from 0");
        }
        // onTask sees the same (src worker, id) pairs
        $seen = [];
        foreach ($tasks as $t) {
            $seen[] = [$t['src'], $t['id']];
        }
        $expected = [];
        foreach ($perWorker as $worker => $ids) {
            foreach ($ids as $id) {
                $expected[] = [$worker, $id];
            }
        }
        sort($seen);
        sort($expected);
        $this->assertSame($expected, $seen);
    }

    public function testAStringTaskArrivesByteIdenticalWithNulAndInvalidUtf8(): void
    {
        $this->serve(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'task_worker_num' => 1]);
$server->on('Receive', function ($s, $fd, $rid, $data) {
    $payloads = ["\0", "a\0b\0", "\xff\xfe\xc3\x28\x80", "\0\xff" . str_repeat("\x00\x01\xc0", 5000) . "\0", $data, '0', ' '];
    foreach ($payloads as $p) {
        record('sent', ['hex' => bin2hex($p), 'id' => $s->task($p)]);
    }
});
$server->on('Task', function ($s, $id, $src, $data) {
    record('task', ['id' => $id, 'type' => gettype($data), 'hex' => is_string($data) ? bin2hex($data) : null]);
});
$server->start();
PHP);
        $this->client('$c->send("cli\0ent\xff\xfe\0");');
        $sent = $this->waitEvents('sent', 7);
        $tasks = $this->waitEvents('task', 7);
        $this->assertSame(bin2hex("cli\0ent\xff\xfe\0"), $sent[4]['hex'], 'onReceive got the client bytes unchanged');
        $byId = array_column($tasks, null, 'id');
        foreach ($sent as $s) {
            $this->assertArrayHasKey($s['id'], $byId);
            $this->assertSame('string', $byId[$s['id']]['type']);
            $this->assertSame($s['hex'], $byId[$s['id']]['hex']);
        }
    }

    public function testNonStringTaskValuesAndResultsArriveIdentical(): void
    {
        $this->serve(<<<'PHP'
class Mail { public $to = 'a@b'; protected $prio = 3; private $body = "x\0y"; }
function values(): array
{
    $o = new stdClass();
    $o->a = [1, 2];
    $o->b = null;
    return [
        ['from_email' => 'xxx.@qq.com', 'to_email' => 'xx.@163.com', 'title' => '', 'content' => ''],
        [1, [2, [3, ['deep' => true]]], 'k' => 1.5],
        [],
        $o,
        new Mail(),
        0,
        -42,
        PHP_INT_MAX,
        PHP_INT_MIN,
        1.5,
        0.1 + 0.2,
        -0.0,
        true,
        false,
        null,
    ];
}
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'task_worker_num' => 1]);
$server->on('Receive', function ($s, $fd, $rid, $data) {
    foreach (values() as $i => $v) {
        record('sent', ['i' => $i, 'id' => $s->task($v)]);
    }
});
$server->on('Task', function ($s, $id, $src, $data) {
    record('task', ['id' => $id, 'ser' => bin2hex(serialize($data)), 'class' => is_object($data) ? get_class($data) : null]);
    return $data;
});
$server->on('Finish', function ($s, $id, $data) {
    record('finish', ['id' => $id, 'ser' => bin2hex(serialize($data))]);
});
$server->start();
PHP);
        $this->client('$c->send("go");');
        $n = 15;
        $sent = $this->waitEvents('sent', $n);
        $tasks = $this->waitEvents('task', $n);
        $byId = array_column($tasks, null, 'id');
        // Every value comes back as onTask's result too, but null: a null
        // result means no onFinish, as in Swoole.
        $finished = array_column($this->waitEvents('finish', $n - 1), null, 'id');

        // What each value serializes to, computed here (the server script's
        // Mail class is reproduced by its serialized form).
        $o = new stdClass();
        $o->a = [1, 2];
        $o->b = null;
        $expected = [
            serialize(['from_email' => 'xxx.@qq.com', 'to_email' => 'xx.@163.com', 'title' => '', 'content' => '']),
            serialize([1, [2, [3, ['deep' => true]]], 'k' => 1.5]),
            serialize([]),
            serialize($o),
            'O:4:"Mail":3:{s:2:"to";s:3:"a@b";s:7:"' . "\0*\0" . 'prio";i:3;s:10:"' . "\0Mail\0" . 'body";s:3:"' . "x\0y" . '";}',
            serialize(0),
            serialize(-42),
            serialize(PHP_INT_MAX),
            serialize(PHP_INT_MIN),
            serialize(1.5),
            serialize(0.1 + 0.2),
            serialize(-0.0),
            serialize(true),
            serialize(false),
            serialize(null),
        ];
        foreach ($sent as $s) {
            $this->assertNotFalse($s['id'], "task() of value #{$s['i']} succeeded");
            $this->assertArrayHasKey($s['id'], $byId);
            $this->assertSame($expected[$s['i']], hex2bin($byId[$s['id']]['ser']), "value #{$s['i']} arrives identical");
            if ($expected[$s['i']] !== 'N;') {
                $this->assertSame($expected[$s['i']], hex2bin($finished[$s['id']]['ser']), "value #{$s['i']} comes back identical");
            }
        }
        $this->assertCount($n - 1, $finished);
        $this->assertSame('Mail', $byId[$sent[4]['id']]['class']);
        $this->assertSame('stdClass', $byId[$sent[3]['id']]['class']);
    }

    public function testAnEightMebibyteTaskArrivesWhole(): void
    {
        $this->serve(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'task_worker_num' => 1]);
$server->on('Receive', function ($s, $fd, $rid, $data) {
    $big = random_bytes(8 * 1024 * 1024);
    $id = $s->task($big);
    record('sent', ['id' => $id, 'md5' => md5($big), 'len' => strlen($big)]);
    // a small one after it must not overtake or corrupt it
    record('sent2', ['id' => $s->task('after')]);
});
$server->on('Task', function ($s, $id, $src, $data) {
    record('task', ['id' => $id, 'md5' => md5($data), 'len' => strlen($data), 'head' => bin2hex(substr($data, 0, 8))]);
    return strrev($data);
});
$server->on('Finish', function ($s, $id, $data) {
    record('finish', ['id' => $id, 'md5' => md5(strrev($data)), 'len' => strlen($data)]);
});
$server->start();
PHP);
        $this->client('$c->send("go");');
        $sent = $this->waitEvents('sent', 1)[0];
        $tasks = $this->waitEvents('task', 2);
        $this->assertSame(8 * 1024 * 1024, $sent['len']);
        $this->assertSame([$sent['id'], 8 * 1024 * 1024, $sent['md5']], [$tasks[0]['id'], $tasks[0]['len'], $tasks[0]['md5']]);
        $this->assertSame(md5('after'), $tasks[1]['md5']);
        // the 8 MiB result travels back whole too
        $finish = array_column($this->waitEvents('finish', 2), null, 'id');
        $this->assertSame([8 * 1024 * 1024, $sent['md5']], [$finish[$sent['id']]['len'], $finish[$sent['id']]['md5']]);
    }

    public function testDstWorkerIdRoutesToThatTaskWorker(): void
    {
        $this->serve(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 2, 'task_worker_num' => 3]);
$server->on('Receive', function ($s, $fd, $rid, $data) {
    foreach ([2, 0, 1, 2, 2, 1, 0] as $i => $dst) {
        record('sent', ['id' => $s->task(['dst' => $dst, 'i' => $i], $dst), 'dst' => $dst]);
    }
});
$server->on('Task', function ($s, $id, $src, $data) {
    record('task', ['dst' => $data['dst'], 'i' => $data['i'], 'worker_id' => $s->worker_id, 'pid' => getmypid()]);
});
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->start();
PHP);
        $this->waitEvents('workerstart', 5);
        $this->client('$c->send("go");');
        $tasks = $this->waitEvents('task', 7);
        foreach ($this->events('sent') as $s) {
            $this->assertIsInt($s['id']);
        }
        $this->assertCount(7, $tasks);
        foreach ($tasks as $t) {
            $this->assertSame(2 + $t['dst'], $t['worker_id'], "task #{$t['i']} ran in task worker index {$t['dst']}");
        }
        // per destination, tasks run in dispatch order
        $order = [];
        foreach ($tasks as $t) {
            $order[$t['dst']][] = $t['i'];
        }
        ksort($order);
        $this->assertSame([0 => [1, 6], 1 => [2, 5], 2 => [0, 3, 4]], $order);
    }

    public function testTaskErrorPathsWarnAndReturnFalse(): void
    {
        $this->serve(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'task_worker_num' => 3]);
$server->on('Receive', function ($s, $fd, $rid, $data) {
    [$r, $w] = capture(fn () => $s->task('x', 3));
    record('dst3', ['ret' => $r, 'warnings' => $w]);
    [$r, $w] = capture(fn () => $s->task('x', 99));
    record('dst99', ['ret' => $r, 'warnings' => $w]);
    [$r, $w] = capture(fn () => $s->task('x', 2));
    record('dst2', ['ret' => $r, 'warnings' => $w]);
    [$r, $w] = capture(fn () => $s->finish('x'));
    record('finish_in_worker', ['ret' => $r, 'warnings' => $w]);
});
$server->on('Task', function ($s, $id, $src, $data) {
    [$r, $w] = capture(fn () => $s->task('nested'));
    record('nested', ['ret' => $r, 'warnings' => $w, 'worker_id' => $s->worker_id]);
});
$server->start();
PHP);
        $this->client('$c->send("go");');
        $dst3 = $this->waitEvents('dst3', 1)[0];
        $this->assertFalse($dst3['ret']);
        $this->assertSame([[E_WARNING, 'TaskQ\Server::task(): worker_id must be less than task_worker_num[3]']], $dst3['warnings']);
        $dst99 = $this->waitEvents('dst99', 1)[0];
        $this->assertFalse($dst99['ret']);
        $this->assertCount(1, $dst99['warnings']);
        $this->assertStringContainsString('worker_id must be less than task_worker_num[3]', $dst99['warnings'][0][1]);
        $dst2 = $this->waitEvents('dst2', 1)[0];
        $this->assertIsInt($dst2['ret'], 'the highest valid index works');
        $this->assertSame([], $dst2['warnings']);

        $fin = $this->waitEvents('finish_in_worker', 1)[0];
        $this->assertFalse($fin['ret']);
        $this->assertCount(1, $fin['warnings']);
        $this->assertSame(E_WARNING, $fin['warnings'][0][0]);
        $this->assertStringContainsString('finish', $fin['warnings'][0][1]);
        $this->assertStringContainsString('task worker', $fin['warnings'][0][1]);

        $nested = $this->waitEvents('nested', 1)[0];
        $this->assertSame(3, $nested['worker_id']);
        $this->assertFalse($nested['ret']);
        $this->assertCount(1, $nested['warnings']);
        $this->assertSame(E_WARNING, $nested['warnings'][0][0]);
        $this->assertStringContainsString('cannot use in the task-worker', $nested['warnings'][0][1]);
    }

    public function testTaskWithoutTaskWorkersWarnsAndReturnsFalse(): void
    {
        $this->serve(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'task_worker_num' => 0]);
$server->on('Receive', function ($s, $fd, $rid, $data) {
    [$r, $w] = capture(fn () => $s->task($data));
    record('task', ['ret' => $r, 'warnings' => $w]);
});
$server->start();
PHP);
        $this->client('$c->send("go");');
        $e = $this->waitEvents('task', 1)[0];
        $this->assertFalse($e['ret']);
        $this->assertSame([[E_WARNING, "TaskQ\\Server::task(): task method can't be executed without task worker"]], $e['warnings']);
    }

    public function testTaskAndFinishOutsideStartWarnAndReturnFalse(): void
    {
        $server = new TaskServer('127.0.0.1', 0);
        $server->set(['worker_num' => 1, 'task_worker_num' => 1]);
        $server->on('Receive', function () {});
        $server->on('Task', function () {});
        [$ret, $warnings] = $this->captureWarnings(fn () => $server->task('x'));
        $this->assertFalse($ret);
        $this->assertSame([[E_WARNING, 'TaskQ\Server::task(): server is not running: task() works after start(), in an event worker']], $warnings);
        [$ret, $warnings] = $this->captureWarnings(fn () => $server->finish('x'));
        $this->assertFalse($ret);
        $this->assertCount(1, $warnings);
        $this->assertSame(E_WARNING, $warnings[0][0]);
        $this->assertStringStartsWith('TaskQ\Server::finish(): ', $warnings[0][1]);
        unset($server);
    }

    // ---------------------------------------------------------------- onTask result / finish()

    public function testOnTaskReturnValueReachesOnFinishInTheDispatchingWorker(): void
    {
        $this->serve(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 2, 'task_worker_num' => 2, 'dispatch_mode' => 1]);
$server->on('Receive', function ($s, $fd, $rid, $data) {
    record('dispatched', ['worker' => $s->worker_id, 'pid' => getmypid(), 'id' => $s->task($data), 'data' => $data]);
});
$server->on('Task', function ($s, $id, $src, $data) {
    if ($data === 'false') {
        return false;
    }
    if ($data === 'array') {
        return ['r' => [1, 2]];
    }
    return "r:$data";
});
$server->on('Finish', function ($s, $id, $data) {
    record('finish', ['worker' => $s->worker_id, 'pid' => getmypid(), 'id' => $id, 'ser' => serialize($data), 'task' => $s->taskworker]);
});
$server->start();
PHP);
        $this->client('foreach (["a", "b", "c", "d", "false", "array"] as $m) { $c->send($m); }');
        $dispatched = $this->waitEvents('dispatched', 6);
        $finish = $this->waitEvents('finish', 6);
        $this->assertCount(2, array_unique(array_column($dispatched, 'worker')), 'both event workers dispatched');
        $expect = fn (string $d) => serialize(match ($d) { 'false' => false, 'array' => ['r' => [1, 2]], default => "r:$d" });
        $want = [];
        foreach ($dispatched as $d) {
            $want[] = [$d['worker'], $d['pid'], $d['id'], $expect($d['data']), false];
        }
        $got = [];
        foreach ($finish as $f) {
            $got[] = [$f['worker'], $f['pid'], $f['id'], $f['ser'], $f['task']];
        }
        sort($want);
        sort($got);
        $this->assertSame($want, $got);
    }

    public function testFinishInOnTaskReachesOnFinishEachTimeAndNullReturnSendsNothing(): void
    {
        $this->serve(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'task_worker_num' => 1]);
$server->on('Receive', function ($s, $fd, $rid, $data) {
    foreach (['once', 'twice', 'null', 'finish+return', 'barrier'] as $kind) {
        record('dispatched', ['kind' => $kind, 'id' => $s->task($kind, 0)]);
    }
});
$server->on('Task', function ($s, $id, $src, $data) {
    switch ($data) {
        case 'once':
            record('finish_ret', ['ret' => $s->finish('once-1')]);
            return null;
        case 'twice':
            $s->finish('twice-1');
            $s->finish('twice-2');
            return;
        case 'null':
            return null;
        case 'finish+return':
            $s->finish('fr-1');
            return 'fr-2';
        case 'barrier':
            return 'barrier';
    }
});
$server->on('Finish', function ($s, $id, $data) {
    record('finish', ['id' => $id, 'data' => $data]);
});
$server->start();
PHP);
        $this->client('$c->send("go");');
        $ids = array_column($this->waitEvents('dispatched', 5), 'id', 'kind');
        // the barrier's result is the last the single task worker sends
        $this->waitUntil(fn () => in_array('barrier', array_column($this->events('finish'), 'data'), true), 5, 'the barrier result');
        $got = [];
        foreach ($this->events('finish') as $f) {
            $got[] = [$f['id'], $f['data']];
        }
        $this->assertSame([
            [$ids['once'], 'once-1'],
            [$ids['twice'], 'twice-1'],
            [$ids['twice'], 'twice-2'],
            [$ids['finish+return'], 'fr-1'],
            [$ids['finish+return'], 'fr-2'],
            [$ids['barrier'], 'barrier'],
        ], $got, 'no onFinish for the null return; one per finish() call');
        $this->assertTrue($this->events('finish_ret')[0]['ret'], 'finish() returns true in a task worker');
    }

    public function testThePerCallFinishCallbackReplacesOnFinish(): void
    {
        $this->serve(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'task_worker_num' => 1]);
$server->on('Receive', function ($s, $fd, $rid, $data) {
    $a = $s->task('with-callback', 0, function ($srv, $id, $result) {
        record('callback', ['id' => $id, 'data' => $result, 'worker' => $srv->worker_id]);
    });
    $b = $s->task('plain', 0);
    $c = $s->task('with-callback-2', -1, fn ($srv, $id, $result) => record('callback', ['id' => $id, 'data' => $result, 'worker' => $srv->worker_id]));
    $d = $s->task('barrier', 0);
    record('dispatched', ['ids' => [$a, $b, $c, $d]]);
});
$server->on('Task', function ($s, $id, $src, $data) { return "r:$data"; });
$server->on('Finish', function ($s, $id, $data) { record('finish', ['id' => $id, 'data' => $data]); });
$server->start();
PHP);
        $this->client('$c->send("go");');
        [$a, $b, $c, $d] = $this->waitEvents('dispatched', 1)[0]['ids'];
        $this->waitUntil(fn () => count($this->events('finish')) >= 2 && count($this->events('callback')) >= 2, 5, 'all results');
        $this->assertSame([
            ['event' => 'callback', 'id' => $a, 'data' => 'r:with-callback', 'worker' => 0],
            ['event' => 'callback', 'id' => $c, 'data' => 'r:with-callback-2', 'worker' => 0],
        ], array_map(fn ($e) => array_diff_key($e, ['pid' => 1]), $this->events('callback')));
        $this->assertSame([
            ['event' => 'finish', 'id' => $b, 'data' => 'r:plain'],
            ['event' => 'finish', 'id' => $d, 'data' => 'r:barrier'],
        ], array_map(fn ($e) => array_diff_key($e, ['pid' => 1]), $this->events('finish')), 'onFinish does not run for tasks with their own callback');
    }

    // ---------------------------------------------------------------- send() / close() / Connect / Close

    public function testSendFromOnReceiveReachesTheClientsRecv(): void
    {
        $this->serve(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1]);
$server->on('Receive', function ($s, $fd, $rid, $data) {
    record('send', ['ret' => $s->send($fd, "pong:$data")]);
    $s->send($fd, "\0bin\xff\0");
    $s->send($fd, str_repeat('z', 300000));
});
$server->start();
PHP);
        $out = $this->client(<<<'PHP'
$c->send("ping\0!");
$r = [];
for ($i = 0; $i < 3; $i++) {
    $got = $c->recv();
    $r[] = $got === false ? 'false:' . $c->errCode : bin2hex(strlen($got) > 64 ? md5($got) . ':' . strlen($got) : $got);
}
echo json_encode($r);
PHP);
        $this->assertSame([
            bin2hex("pong:ping\0!"),
            bin2hex("\0bin\xff\0"),
            bin2hex(md5(str_repeat('z', 300000)) . ':300000'),
        ], json_decode($out, true));
        $this->assertTrue($this->events('send')[0]['ret']);
    }

    public function testCloseFromTheServerClosesTheClientAndFiresOnClose(): void
    {
        $this->serve(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1]);
$server->on('Connect', function ($s, $fd, $rid) { record('connect', ['fd' => $fd]); });
$server->on('Receive', function ($s, $fd, $rid, $data) {
    record('receive', ['fd' => $fd]);
    record('close_ret', ['ret' => $s->close($fd)]);
});
$server->on('Close', function ($s, $fd, $rid) { record('close', ['fd' => $fd, 'rid' => $rid]); });
$server->start();
PHP);
        $out = $this->client(<<<'PHP'
$c->send("bye");
$got = $c->recv();
echo json_encode(['recv' => $got, 'err' => $c->errCode]);
PHP);
        $r = json_decode($out, true);
        $this->assertSame('', $r['recv'], 'recv() returns "" once the server closed');
        $close = $this->waitEvents('close', 1)[0];
        $fd = $this->events('receive')[0]['fd'];
        $this->assertSame($fd, $this->events('connect')[0]['fd']);
        $this->assertSame($fd, $close['fd']);
        $this->assertTrue($this->events('close_ret')[0]['ret']);
    }

    public function testConnectAndCloseEventsCarryTheFd(): void
    {
        $this->serve(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1]);
$server->on('Connect', function ($s, $fd, $rid) { record('connect', ['fd' => $fd, 'rid' => $rid]); });
$server->on('Receive', function ($s, $fd, $rid, $data) { record('receive', ['fd' => $fd, 'data' => $data]); $s->send($fd, 'ok'); });
$server->on('Close', function ($s, $fd, $rid) { record('close', ['fd' => $fd, 'rid' => $rid]); });
$server->start();
PHP);
        $this->client('$c->send("one"); $c->recv(); $c->close();');
        $this->waitEvents('close', 1);
        $this->client('$c->send("two"); $c->recv(); $c->close();');
        $close = $this->waitEvents('close', 2);
        $connect = $this->events('connect');
        $receive = $this->events('receive');
        $this->assertCount(2, $connect);
        $this->assertIsInt($connect[0]['fd']);
        $this->assertGreaterThan(0, $connect[0]['fd']);
        $this->assertNotSame($connect[0]['fd'], $connect[1]['fd'], 'each connection has its own fd');
        $this->assertSame(array_column($connect, 'fd'), array_column($receive, 'fd'));
        $this->assertSame(array_column($connect, 'fd'), array_column($close, 'fd'));
        $this->assertSame(['one', 'two'], array_column($receive, 'data'));
        // order in the log: connect, receive, close per connection
        $kinds = array_values(array_filter(array_column($this->events(), 'event'), fn ($k) => in_array($k, ['connect', 'receive', 'close'], true)));
        $this->assertSame(['connect', 'receive', 'close', 'connect', 'receive', 'close'], $kinds);
    }

    // ---------------------------------------------------------------- worker properties

    public function testWorkerPropertiesMatchTheProcessTree(): void
    {
        $server = $this->serve(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 2, 'task_worker_num' => 2]);
$props = fn ($s) => [
    'worker_id' => $s->worker_id, 'taskworker' => $s->taskworker, 'worker_pid' => $s->worker_pid,
    'master_pid' => $s->master_pid, 'manager_pid' => $s->manager_pid,
    'get' => [$s->getWorkerId(), $s->getWorkerPid(), $s->getMasterPid(), $s->getManagerPid()],
];
$server->on('Start', function ($s) use ($props) { record('start', $props($s)); });
$server->on('WorkerStart', function ($s, $id) use ($props) { record('workerstart', ['arg' => $id] + $props($s)); });
$server->on('Receive', function ($s, $fd, $rid, $data) use ($props) { record('receive', $props($s)); $s->task('t'); });
$server->on('Task', function ($s, $id, $src, $data) use ($props) { record('task', $props($s)); });
$server->start();
PHP);
        $starts = $this->waitEvents('workerstart', 4, 10, $server);
        $start = $this->waitEvents('start', 1, 10, $server)[0];
        $master = $server->pid();
        $this->waitUntil(fn () => count($server->tree()) === 6, 5, 'master + manager + 4 workers', $server);

        $this->assertSame($master, $start['pid']);
        $this->assertSame($master, $start['master_pid']);
        $this->assertSame(-1, $start['worker_id']);
        $manager = $start['manager_pid'];
        $this->assertGreaterThan(0, $manager);
        $this->assertSame($master, self::ppid($manager), 'the manager is a child of the master');

        usort($starts, fn ($a, $b) => $a['arg'] <=> $b['arg']);
        $this->assertSame([0, 1, 2, 3], array_column($starts, 'arg'));
        foreach ($starts as $e) {
            $id = $e['arg'];
            // one comparison, so that a failure shows every property at once
            $this->assertSame([
                'worker_id' => $id,
                'taskworker' => $id >= 2,
                'worker_pid' => $e['pid'],
                'master_pid' => $master,
                'manager_pid' => $manager,
                'get' => [$id, $e['pid'], $master, $manager],
            ], array_intersect_key($e, array_flip(['worker_id', 'taskworker', 'worker_pid', 'master_pid', 'manager_pid', 'get'])), "properties in WorkerStart of worker $id");
            $this->assertSame($manager, self::ppid($e['pid']), "worker $id is a child of the manager");
        }
        $tree = $server->tree();
        $expectedTree = array_merge([$master, $manager], array_column($starts, 'pid'));
        sort($expectedTree);
        $this->assertSame($expectedTree, $tree);

        $this->client('$c->send("x");');
        $receive = $this->waitEvents('receive', 1)[0];
        $task = $this->waitEvents('task', 1)[0];
        $this->assertFalse($receive['taskworker']);
        $this->assertContains($receive['worker_id'], [0, 1]);
        $this->assertSame($receive['pid'], $receive['worker_pid']);
        $this->assertTrue($task['taskworker']);
        $this->assertContains($task['worker_id'], [2, 3]);
        $this->assertSame($task['pid'], $task['worker_pid']);
        $this->assertSame([$master, $manager], [$task['master_pid'], $task['manager_pid']]);
    }
}
