<?php
use TaskQ\Tests\Support\TaskqTestCase;

/**
 * Issue 13.1 and issue 12's named arguments: taskq's methods take arguments
 * the way an internal PHP function does in the caller's typing mode, with
 * Swoole's parameter names. Each case calls a taskq method and a userland
 * function with the same signature, from the same file (so in the same
 * typing mode), and compares what PHP made of the arguments: accepted, or
 * the TypeError's text after "Method(): ", plus any deprecation.
 */
final class ArgumentRulesTest extends TaskqTestCase
{
    /** Script body shared by the coercive and the strict run. */
    private const CASES = <<<'PHP'
function u_server(string $host, ?int $port = 0, ?int $mode = 2, ?int $sock_type = 1) {}
function u_set(array $settings) {}
function u_task(mixed $data, ?int $taskWorkerIndex = -1, mixed $finishCallback = null) {}
function u_taskwait(mixed $data, ?float $timeout = 0.5, ?int $taskWorkerIndex = -1) {}
function u_worker(?int $worker_id = -1) {}
function u_client(?int $type = 1, ?bool $async = false, ?string $id = null) {}
function u_connect(string $host, ?int $port = 0, ?float $timeout = 0.5, ?int $sock_flag = 0) {}
function u_recv(?int $size = 65535, ?int $flag = 0) {}
function u_close(?bool $force = false) {}
function u_mailer(string $dsn, ?array $options = null) {}
function u_mail(array $message) {}
function u_tick(int $ms, mixed $callback) {}
function u_ssend(int $fd, string $send_data) {}
function u_csend(string|array $data) {}

$server = new TaskQ\Server('127.0.0.1', 0);
$client = new TaskQ\Client(TASKQ_SOCK_TCP);
$mailer = new TaskQ\Mailer('smtp://127.0.0.1:1');
$m = [
    'server' => [fn (...$a) => new TaskQ\Server(...$a), 'u_server'],
    'set' => [fn (...$a) => $server->set(...$a), 'u_set'],
    'task' => [fn (...$a) => $server->task(...$a), 'u_task'],
    'taskwait' => [fn (...$a) => $server->taskwait(...$a), 'u_taskwait'],
    'getWorkerPid' => [fn (...$a) => $server->getWorkerPid(...$a), 'u_worker'],
    'client' => [fn (...$a) => new TaskQ\Client(...$a), 'u_client'],
    'connect' => [fn (...$a) => (new TaskQ\Client(TASKQ_SOCK_TCP))->connect(...$a), 'u_connect'],
    'recv' => [fn (...$a) => $client->recv(...$a), 'u_recv'],
    'close' => [fn (...$a) => $client->close(...$a), 'u_close'],
    'mailer' => [fn (...$a) => new TaskQ\Mailer(...$a), 'u_mailer'],
    'send' => [fn (...$a) => $mailer->send(...$a), 'u_mail'],
    'tick' => [fn (...$a) => TaskQ\Timer::tick(...$a), 'u_tick'],
    'ssend' => [fn (...$a) => $server->send(...$a), 'u_ssend'],
    'csend' => [fn (...$a) => $client->send(...$a), 'u_csend'],
];
$cases = [
    ['server', ['127.0.0.1', '0']],
    ['server', ['127.0.0.1', '0', '1', '1']],
    ['server', ['127.0.0.1', 0, 2.0, 1.0]],
    ['server', ['127.0.0.1', 0, true]],
    ['server', ['127.0.0.1', null, null, null]],
    ['server', ['127.0.0.1', ' 0']],
    ['server', ['127.0.0.1', 'abc']],
    ['server', ['127.0.0.1', '9501x']],
    ['server', ['127.0.0.1', []]],
    ['server', ['127.0.0.1', 0, 2.5]],
    ['server', [12.5]],
    ['set', ['worker_num=1']],
    ['set', [null]],
    ['task', ['x', '0']],
    ['task', ['x', 'zero']],
    ['task', ['x', null, null]],
    ['taskwait', ['x', '0.25', '0']],
    ['taskwait', ['x', 'soon']],
    ['taskwait', ['x', 1]],
    ['getWorkerPid', ['1']],
    ['getWorkerPid', [false]],
    ['client', ['1']],
    ['client', [1.0, false]],
    ['client', ['tcp']],
    ['client', [1, 0]],
    ['client', [1, 'no']],
    ['connect', ['127.0.0.1', '1', '0.5']],
    ['connect', ['127.0.0.1', 1, 1]],
    ['connect', ['127.0.0.1', 1, 'soon']],
    ['connect', [new ArrayObject([]), 1]],
    ['recv', ['100', '0']],
    ['recv', ['lots']],
    ['close', [1]],
    ['close', ['yes']],
    ['close', [[]]],
    ['mailer', ['smtp://127.0.0.1:1', null]],
    ['mailer', ['smtp://127.0.0.1:1', 'timeout=1']],
    ['send', ['to: a@b.c']],
    ['tick', ['10', 'strlen']],
    ['tick', ['ten', 'strlen']],
    ['tick', [10.0, 'strlen']],
    ['ssend', ['1', 42]],
    ['ssend', [1, []]],
    ['csend', [42]],
    ['csend', [['to' => 'a@b.c']]],
    ['csend', [new stdClass()]],
];

/** What PHP made of the call: accepted or the TypeError, and deprecations. */
function outcome(callable $f, array $args): array
{
    $deprecations = [];
    set_error_handler(function ($no, $msg) use (&$deprecations) {
        if ($no === E_DEPRECATED) {
            $deprecations[] = preg_replace('/^\S+\(\): /', '', $msg);
        }
        return true;
    });
    try {
        $f(...$args);
        $r = 'accepted';
    } catch (TypeError $e) {
        $r = 'TypeError: ' . preg_replace(['/^\S+\(\): /', '/, called in .*$/'], '', $e->getMessage());
    } catch (Throwable $e) {
        $r = 'accepted'; // the arguments passed; the method itself refused (e.g. not running)
    } finally {
        restore_error_handler();
    }
    return [$r, $deprecations];
}

$out = [];
foreach ($cases as $i => [$method, $args]) {
    [$taskq, $userland] = $m[$method];
    $out[] = ['case' => "#$i $method(" . json_encode($args) . ')', 'taskq' => outcome($taskq, $args), 'php' => outcome($userland, $args)];
}
echo json_encode($out);
PHP;

    /**
     * Runs the cases in one typing mode, asserts that taskq's outcome is the
     * userland function's in every case, and returns taskq's by case.
     */
    private function runCases(bool $strict): array
    {
        $code = "<?php\n" . ($strict ? "declare(strict_types=1);\n" : '') . self::CASES;
        $script = "$this->dir/args-" . ($strict ? 'strict' : 'coercive') . '.php';
        file_put_contents($script, $code);
        [$exit, $out, $err] = $this->runScript($script, 20);
        $this->assertSame(0, $exit, "stdout: $out\nstderr: $err");
        $rows = json_decode($out, true);
        $this->assertIsArray($rows, $out);
        foreach ($rows as $row) {
            $this->assertSame($row['php'], $row['taskq'], $row['case']);
        }
        return array_column($rows, 'taskq', 'case');
    }

    public function testCoerciveModeAcceptsWhatAPhpFunctionAccepts(): void
    {
        $byCase = $this->runCases(false);
        // The cases the issue names, spelled out.
        $this->assertSame(['accepted', []], $byCase['#1 server(["127.0.0.1","0","1","1"])']);
        $this->assertSame(['accepted', []], $byCase['#26 connect(["127.0.0.1","1","0.5"])']);
        $this->assertSame(['accepted', []], $byCase['#4 server(["127.0.0.1",null,null,null])']);
        $this->assertSame(['TypeError: Argument #2 ($port) must be of type ?int, string given', []], $byCase['#6 server(["127.0.0.1","abc"])']);
        $this->assertSame(['accepted', ['Implicit conversion from float 2.5 to int loses precision']], $byCase['#9 server(["127.0.0.1",0,2.5])']);
        $this->assertSame('TypeError: Argument #1 ($settings) must be of type array, string given', $byCase['#11 set(["worker_num=1"])'][0]);
    }

    public function testStrictTypesGetPhpsTypeErrors(): void
    {
        $byCase = $this->runCases(true);
        $this->assertSame(['TypeError: Argument #2 ($port) must be of type ?int, string given', []], $byCase['#0 server(["127.0.0.1","0"])']);
        $this->assertSame(['TypeError: Argument #3 ($timeout) must be of type ?float, string given', []], $byCase['#28 connect(["127.0.0.1",1,"soon"])']);
        $this->assertSame(['accepted', []], $byCase['#27 connect(["127.0.0.1",1,1])'], 'an int is a float even under strict_types');
        $this->assertSame(['accepted', []], $byCase['#4 server(["127.0.0.1",null,null,null])']);
    }

    /** The full message names the real class and method, as PHP's do. */
    public function testTypeErrorNamesMethodArgumentAndType(): void
    {
        try {
            new Swoole\Client('tcp');
            $this->fail('a non-numeric string must not be a socket type');
        } catch (TypeError $e) {
            $this->assertSame('TaskQ\Client::__construct(): Argument #1 ($type) must be of type ?int, string given', $e->getMessage());
        }
        try {
            (new TaskQ\Mailer('smtp://127.0.0.1:1'))->sendMany('x');
            $this->fail('sendMany() needs an array');
        } catch (TypeError $e) {
            $this->assertSame('TaskQ\Mailer::sendMany(): Argument #1 ($messages) must be of type array, string given', $e->getMessage());
        }
    }

    /** A callback that is not callable: the engine's own "valid callback" TypeError, as for call_user_func(). */
    public function testCallbacksAreCheckedLikeAnInternalFunctionsCallable(): void
    {
        $reason = function (callable $call): string {
            try {
                $call();
                return 'accepted';
            } catch (TypeError $e) {
                return preg_replace('/^.*?: Argument #\d+ \(\$\w+\) /', '', $e->getMessage());
            }
        };
        $php = $reason(fn () => call_user_func('no_such_function'));
        $this->assertSame('must be a valid callback, function "no_such_function" not found or invalid function name', $php);
        $s = new TaskQ\Server('127.0.0.1', 0);
        try {
            $s->on('Receive', 'no_such_function');
            $this->fail('a name that is no function is no callback');
        } catch (TypeError $e) {
            $this->assertSame("TaskQ\\Server::on(): Argument #2 (\$callback) $php", $e->getMessage());
        }
        $this->assertSame($php, $reason(fn () => TaskQ\Timer::tick(10, 'no_such_function')));
        $this->assertSame($php, $reason(fn () => $s->after(10, 'no_such_function')));
        $this->assertSame(
            'must be a valid callback or null, no array or string given',
            $reason(fn () => @$s->task('x', -1, 42)),
        );
        $this->assertSame('accepted', $reason(fn () => @$s->task('x', -1, null)), 'null: no finish callback');
        $this->assertTrue($s->on('Receive', 'strlen'));
        $this->assertTrue($s->on('Task', [$this, 'assertTrue']));
    }

    /** A required string given null: deprecated and coerced, as for PHP's own functions. */
    public function testNullForARequiredStringIsDeprecatedLikeAnInternalFunction(): void
    {
        $code = <<<'PHP'
<?php
$d = [];
set_error_handler(function ($no, $msg) use (&$d) { $d[] = [$no, $msg]; return true; });
str_repeat(null, 1);
try { new TaskQ\Mailer(null); } catch (TaskQ\Exception $e) { $d[] = 'refused: ' . $e->getMessage(); }
echo json_encode($d);
PHP;
        [$exit, $out, $err] = $this->runPhp($code);
        $this->assertSame([0, ''], [$exit, $err], $out);
        $d = json_decode($out, true);
        $this->assertSame([E_DEPRECATED, 'str_repeat(): Passing null to parameter #1 ($string) of type string is deprecated'], $d[0]);
        $this->assertSame([E_DEPRECATED, 'TaskQ\Mailer::__construct(): Passing null to parameter #1 ($dsn) of type string is deprecated'], $d[1]);
        $this->assertStringStartsWith('refused: ', $d[2], 'the empty DSN then fails as a DSN');
    }

    /**
     * Swoole's named arguments reach the method before start() too (the
     * warning, not an unknown-parameter Error); CompatTest holds the table
     * of every parameter name.
     */
    public function testNamedArgumentsUseSwoolesNames(): void
    {
        $s = new Swoole\Server('127.0.0.1', sock_type: SWOOLE_SOCK_TCP, mode: SWOOLE_PROCESS);
        $this->assertGreaterThan(0, $s->port);
        $warnings = [];
        set_error_handler(function ($no, $msg) use (&$warnings) { $warnings[] = $msg; return true; });
        try {
            $this->assertFalse($s->task('x', taskWorkerIndex: 0));
            $this->assertFalse($s->task('x', finishCallback: fn () => null));
            $this->assertFalse($s->taskwait('x', taskWorkerIndex: 0, timeout: 0.1));
            $c = new Swoole\Client(type: SWOOLE_SOCK_TCP);
            $this->assertFalse($c->connect('127.0.0.1', port: self::freePort(), timeout: 0.2, sock_flag: 0));
        } finally {
            restore_error_handler();
        }
        $this->assertSame('TaskQ\Server::task(): server is not running: task() works after start(), in an event worker', $warnings[0], 'reached the method, not an unknown-parameter Error');
    }
}
