<?php
use TaskQ\Tests\Support\TaskqTestCase;

/**
 * Swoole compatibility layer: class aliases and SWOOLE_* constants (on by
 * default, off with taskq.swoole_compat=0), `php --ri taskq`, and the
 * TaskQ\Exception class.
 */
final class CompatTest extends TaskqTestCase
{
    /**
     * Runs PHP with the extension plus `$phpArgs` (e.g. ['-d', 'taskq.swoole_compat=0'])
     * and either a script body (`$code`, written to a file) or nothing (args only).
     * Bounded in time; returns [exit code, stdout, stderr].
     */
    private function runPhpWith(array $phpArgs, ?string $code = null, float $timeout = 10): array
    {
        $cmd = ['timeout', '-k', '1', (string) $timeout, PHP_BINARY, '-n', '-d', 'display_errors=stderr', '-d', 'log_errors=0', '-d', 'extension=' . getenv('TASKQ_EXT')];
        $cmd = array_merge($cmd, $phpArgs);
        if ($code !== null) {
            $script = "$this->dir/compat-" . bin2hex(random_bytes(4)) . '.php';
            file_put_contents($script, $code);
            $cmd[] = $script;
        }
        $p = proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes, $this->dir);
        $this->assertIsResource($p);
        $out = stream_get_contents($pipes[1]);
        $err = stream_get_contents($pipes[2]);
        fclose($pipes[1]);
        fclose($pipes[2]);
        return [proc_close($p), $out, $err];
    }

    public function testSwooleClassAliasesExist(): void
    {
        foreach (['swoole_server', 'swoole_client', 'Swoole\Server', 'Swoole\Client', 'TaskServer', 'TaskClient', 'TaskQ\Exception'] as $class) {
            $this->assertTrue(class_exists($class), "$class exists");
        }
        foreach (['swoole_server', 'Swoole\Server', 'TaskServer'] as $alias) {
            $this->assertSame('TaskQ\Server', (new ReflectionClass($alias))->getName());
        }
        foreach (['swoole_client', 'Swoole\Client', 'TaskClient'] as $alias) {
            $this->assertSame('TaskQ\Client', (new ReflectionClass($alias))->getName());
        }
    }

    public function testNewSwooleServerIsATaskServer(): void
    {
        $a = new swoole_server('127.0.0.1', 0);
        $this->assertInstanceOf(TaskServer::class, $a);
        $this->assertSame('TaskQ\Server', get_class($a));
        $this->assertGreaterThan(0, $a->port);

        $b = new Swoole\Server('127.0.0.1', 0, SWOOLE_PROCESS, SWOOLE_SOCK_TCP);
        $this->assertInstanceOf(TaskServer::class, $b);
        $this->assertInstanceOf(swoole_server::class, $b);
        $this->assertSame(SWOOLE_PROCESS, $b->mode);
        $this->assertSame(SWOOLE_SOCK_TCP, $b->type);
        $this->assertNotSame($a->port, $b->port);
    }

    public function testNewSwooleClientIsATaskClient(): void
    {
        $c = new swoole_client(SWOOLE_SOCK_TCP);
        $this->assertSame('TaskQ\Client', get_class($c));
        $this->assertInstanceOf(Swoole\Client::class, $c);
        $this->assertSame('TaskQ\Client', get_class(new Swoole\Client(SWOOLE_SOCK_TCP)));
    }

    public function testSwooleClientAcceptsTheSyncFlagArgument(): void
    {
        // Legacy Swoole code writes `new swoole_client(SWOOLE_SOCK_TCP, SWOOLE_SOCK_SYNC)`
        // (Swoole: __construct(int $type, bool $async = SWOOLE_SOCK_SYNC, string $id = '')).
        $c = new swoole_client(SWOOLE_SOCK_TCP, SWOOLE_SOCK_SYNC);
        $this->assertSame('TaskQ\Client', get_class($c));
        $this->assertSame(SWOOLE_SOCK_TCP, $c->type);
    }

    public function testSwooleConstantsEqualTheirTaskqTwins(): void
    {
        $expected = [
            'SWOOLE_BASE' => [TASKQ_BASE, 1],
            'SWOOLE_PROCESS' => [TASKQ_PROCESS, 2],
            'SWOOLE_SOCK_TCP' => [TASKQ_SOCK_TCP, 1],
            'SWOOLE_SOCK_TCP6' => [TASKQ_SOCK_TCP6, 3],
            'SWOOLE_SOCK_UNIX_STREAM' => [TASKQ_SOCK_UNIX_STREAM, 5],
            'SWOOLE_TCP' => [TASKQ_SOCK_TCP, 1],
            'SWOOLE_TCP6' => [TASKQ_SOCK_TCP6, 3],
            'SWOOLE_UNIX_STREAM' => [TASKQ_SOCK_UNIX_STREAM, 5],
            'SWOOLE_KEEP' => [TASKQ_KEEP, 4096],
            'SWOOLE_LOG_DEBUG' => [TASKQ_LOG_DEBUG, 0],
            'SWOOLE_LOG_INFO' => [TASKQ_LOG_INFO, 2],
            'SWOOLE_LOG_NONE' => [TASKQ_LOG_NONE, 6],
            'SWOOLE_DISPATCH_ROUND' => [TASKQ_DISPATCH_ROUND, 1],
            'SWOOLE_DISPATCH_FDMOD' => [TASKQ_DISPATCH_FDMOD, 2],
        ];
        foreach ($expected as $name => [$twin, $swooleValue]) {
            $this->assertTrue(defined($name), "$name is defined");
            $this->assertSame($twin, constant($name), "$name equals its TASKQ_ twin");
            $this->assertSame($swooleValue, constant($name), "$name has Swoole's value");
        }
        // Every SWOOLE_X with a TASKQ_X twin has the same value (but the
        // version: SWOOLE_VERSION is the Swoole API level taskq mirrors).
        $consts = get_defined_constants(true)['taskq'];
        $twins = 0;
        foreach ($consts as $name => $value) {
            if (str_starts_with($name, 'SWOOLE_') && $name !== 'SWOOLE_VERSION' && array_key_exists('TASKQ_' . substr($name, 7), $consts)) {
                $this->assertSame($consts['TASKQ_' . substr($name, 7)], $value, $name);
                $twins++;
            }
        }
        $this->assertGreaterThanOrEqual(10, $twins);
        $this->assertFalse(SWOOLE_SOCK_SYNC);
        $this->assertTrue(SWOOLE_SOCK_ASYNC);
    }

    public function testCompatOffRemovesEveryAliasAndSwooleConstant(): void
    {
        $code = <<<'PHP'
<?php
$r = [
    'ini' => ini_get('taskq.swoole_compat'),
    'classes' => array_values(array_filter(['swoole_server', 'swoole_client', 'Swoole\Server', 'Swoole\Client'], 'class_exists')),
    'swoole_constants' => array_values(array_filter(array_keys(get_defined_constants()), fn ($c) => str_starts_with($c, 'SWOOLE_'))),
    'task_server' => class_exists('TaskServer'),
    'task_client' => class_exists('TaskClient'),
    'exception' => class_exists('TaskQ\Exception'),
    'tcp' => defined('TASKQ_SOCK_TCP') ? TASKQ_SOCK_TCP : null,
    'server_works' => (new TaskServer('127.0.0.1', 0))->port > 0,
];
echo json_encode($r);
PHP;
        [$exit, $out, $err] = $this->runPhpWith(['-d', 'taskq.swoole_compat=0'], $code);
        $this->assertSame([0, ''], [$exit, $err], $out);
        $this->assertSame([
            'ini' => '0',
            'classes' => [],
            'swoole_constants' => [],
            'task_server' => true,
            'task_client' => true,
            'exception' => true,
            'tcp' => 1,
            'server_works' => true,
        ], json_decode($out, true), $out);

        // Control: the same script without the flag sees the aliases.
        [$exit, $out] = $this->runPhpWith([], $code);
        $this->assertSame(0, $exit);
        $r = json_decode($out, true);
        $this->assertSame('1', $r['ini']);
        $this->assertSame(['swoole_server', 'swoole_client', 'Swoole\Server', 'Swoole\Client'], $r['classes']);
        $this->assertContains('SWOOLE_SOCK_TCP', $r['swoole_constants']);
        $this->assertContains('SWOOLE_SOCK_SYNC', $r['swoole_constants']);
    }

    /**
     * Issue 13.2: an application's own `class TaskServer` (the obvious name
     * for a wrapper around swoole_server) runs with taskq.global_names=0,
     * serving tasks through Swoole\Server; with the default it clashes.
     */
    public function testAnAppsOwnTaskServerClassRunsWithGlobalNamesOff(): void
    {
        $body = <<<'PHP'
class TaskServer
{
    private Swoole\Server $server;

    public function __construct(int $port)
    {
        $this->server = new Swoole\Server('127.0.0.1', $port);
        $this->server->set(['worker_num' => 1, 'task_worker_num' => 1, 'log_file' => getenv('TASKQ_DIR') . '/taskq.log']);
        $this->server->on('Receive', fn ($s, $fd, $r, $data) => $s->task($data));
        $this->server->on('Task', [$this, 'onTask']);
        $this->server->on('Finish', fn () => null);
    }

    public function onTask($server, $id, $from, $data)
    {
        record('task', ['data' => $data, 'class' => get_class($server), 'TaskClient' => class_exists('TaskClient')]);
        return true;
    }

    public function run(): void
    {
        $this->server->start();
    }
}
(new TaskServer($port))->run();
PHP;
        $port = self::freePort();
        $script = "$this->dir/own-task-server.php";
        file_put_contents($script, "<?php\nrequire " . var_export(__DIR__ . '/Support/prelude.php', true) . ";\n" . $body);
        $server = new TaskQ\Tests\Support\ServerProcess($script, $this->dir, ['TASKQ_PORT' => (string) $port, 'TASKQ_DIR' => $this->dir], ['-d', 'taskq.global_names=0']);
        $this->servers[] = $server;
        $this->waitUntil(fn () => self::listening($port), 10, "server listening on port $port", $server);

        [$exit, $out, $err] = $this->runPhp("<?php\n\$c = new Swoole\\Client(SWOOLE_SOCK_TCP);\nvar_dump(\$c->connect('127.0.0.1', $port, 3), \$c->send('hello'));\n");
        $this->assertSame([0, ''], [$exit, $err], $out);
        $task = $this->waitEvents('task', 1, 10, $server)[0];
        $this->assertSame(['hello', 'TaskQ\Server', false], [$task['data'], $task['class'], $task['TaskClient']]);
        $this->stopServer($server);

        // Control: with the global names on (the default) the class clashes.
        [$exit, , $err] = $this->runPhpWith([], "<?php\nclass TaskServer {}\n");
        $this->assertSame(255, $exit);
        $this->assertStringContainsString('Cannot declare class TaskServer, because the name is already in use', $err);
    }

    /** Both alias groups off: only the TaskQ\ names exist, and they work. */
    public function testOnlyTheNamespacedClassesWithBothGroupsOff(): void
    {
        $code = <<<'PHP'
<?php
class TaskServer {}
class TaskClient {}
echo json_encode([
    array_values(array_filter(['TaskServer', 'TaskClient', 'swoole_server', 'Swoole\Server', 'Swoole\Timer'], fn ($c) => class_exists($c) && (new ReflectionClass($c))->isInternal())),
    function_exists('swoole_version'),
    (new TaskQ\Server('127.0.0.1', 0))->port > 0,
    get_class(new TaskQ\Client(TASKQ_SOCK_TCP)),
]);
PHP;
        [$exit, $out, $err] = $this->runPhpWith(['-d', 'taskq.global_names=0', '-d', 'taskq.swoole_compat=0'], $code);
        $this->assertSame([0, ''], [$exit, $err], $out);
        $this->assertSame([[], false, true, 'TaskQ\Client'], json_decode($out, true));
    }

    public function testPhpRiTaskqReportsSupportVersionAndIni(): void
    {
        [$exit, $out, $err] = $this->runPhpWith(['--ri', 'taskq']);
        $this->assertSame([0, ''], [$exit, $err]);
        $this->assertStringContainsString('taskq support => enabled', $out);
        $this->assertMatchesRegularExpression('/^version => ' . preg_quote(TASKQ_VERSION, '/') . '$/m', $out);
        $this->assertSame(TASKQ_VERSION, phpversion('taskq'));
        $this->assertMatchesRegularExpression('/^taskq\.swoole_compat => 1 => 1$/m', $out);
        $this->assertMatchesRegularExpression('/^taskq\.global_names => 1 => 1$/m', $out);

        [$exit, $out] = $this->runPhpWith(['-d', 'taskq.swoole_compat=0', '--ri', 'taskq']);
        $this->assertSame(0, $exit);
        $this->assertMatchesRegularExpression('/^taskq\.swoole_compat => 0 => 0$/m', $out);
    }

    public function testSwooleCompatIsASystemIniSetting(): void
    {
        $this->assertSame('1', ini_get('taskq.swoole_compat'));
        $this->assertFalse(@ini_set('taskq.swoole_compat', '0'), 'PHP_INI_SYSTEM: not changeable at run time');
        $this->assertSame('1', ini_get('taskq.swoole_compat'));
    }

    public function testTaskqExceptionIsARuntimeExceptionWithTheCallersFileAndLine(): void
    {
        $this->assertTrue(is_subclass_of('TaskQ\Exception', RuntimeException::class));
        try {
            $line = __LINE__ + 1;
            new TaskServer('127.0.0.1', 99999);
            $this->fail('port 99999 must throw');
        } catch (TaskQ\Exception $e) {
            $this->assertInstanceOf(RuntimeException::class, $e);
            $this->assertSame(__FILE__, $e->getFile());
            $this->assertSame($line, $e->getLine());
            $this->assertStringContainsString('99999', $e->getMessage());
        }

        // Also from a separate script, through an alias, inside a function.
        $code = "<?php\nfunction make() {\n    return new swoole_server('127.0.0.1', 99999);\n}\ntry {\n    make();\n} catch (RuntimeException \$e) {\n    echo json_encode([get_class(\$e), basename(\$e->getFile()), \$e->getLine(), \$e->getTrace()[0]['function'] ?? null]);\n}\n";
        [$exit, $out, $err] = $this->runPhpWith([], $code);
        $this->assertSame([0, ''], [$exit, $err]);
        [$class, $file, $l, $fn] = json_decode($out, true);
        $this->assertSame('TaskQ\Exception', $class);
        $this->assertMatchesRegularExpression('/^compat-[0-9a-f]+\.php$/', $file);
        $this->assertSame(3, $l, 'the line of the `new` inside make()');
        $this->assertSame('__construct', $fn);
    }

    public function testExceptionClassesAreDeclaredByTheExtensionAtModuleStart(): void
    {
        foreach (['TaskQ\Exception', 'TaskQ\MailException'] as $class) {
            $r = new ReflectionClass($class);
            $this->assertTrue($r->isInternal(), "$class is declared once by taskq, not by PHP source per request");
            $this->assertSame('taskq', $r->getExtensionName());
        }
        $this->assertSame('TaskQ\Exception', get_parent_class('TaskQ\MailException'));

        $previous = new LogicException('cause');
        $line = __LINE__ + 1;
        $e = new TaskQ\MailException('rejected', 451, false, $previous);
        $this->assertSame(['rejected', 451, false, true, $previous, __FILE__, $line],
            [$e->getMessage(), $e->getCode(), $e->isPermanent(), $e->isTransient(), $e->getPrevious(), $e->getFile(), $e->getLine()]);
        $default = new TaskQ\MailException();
        $this->assertSame(['', 0, true, false, null], [$default->getMessage(), $default->getCode(), $default->isPermanent(), $default->isTransient(), $default->getPrevious()]);
    }

    /**
     * Issue 16: every method and function Swoole 5.1 has takes Swoole 5.1's
     * parameter names (ext-src/stubs/php_swoole_*.stub.php), so PHP 8 named
     * arguments written for Swoole work; taskq-only methods keep taskq's
     * names. Where Swoole has trailing parameters taskq does not take, the
     * list is taskq's prefix of Swoole's (noted per row).
     */
    private const SWOOLE_NAMES = [
        'Swoole\Server' => [
            '__construct' => ['host', 'port', 'mode', 'sock_type'],
            'set' => ['settings'],
            'on' => ['event_name', 'callback'],
            'start' => [],
            'task' => ['data', 'taskWorkerIndex', 'finishCallback'],
            'finish' => ['data'],
            'send' => ['fd', 'send_data'],                              // Swoole: + serverSocket
            'close' => ['fd'],                                          // Swoole: + reset
            'getMasterPid' => [],
            'getManagerPid' => [],
            'getWorkerId' => [],
            'getWorkerPid' => ['worker_id'],
            'getWorkerStatus' => ['worker_id'],
            'stats' => [],
            'exists' => ['fd'],
            'exist' => ['fd'],
            'bind' => ['fd', 'uid'],
            'getClientInfo' => ['fd', 'reactor_id', 'ignoreError'],
            'getClientList' => ['start_fd', 'find_count'],
            'taskwait' => ['data', 'timeout', 'taskWorkerIndex'],
            'taskWaitMulti' => ['tasks', 'timeout'],
            'sendMessage' => ['message', 'dst_worker_id'],
            'reload' => ['only_reload_taskworker'],
            'shutdown' => [],
            'stop' => ['workerId', 'waitEvent'],
        ],
        'Swoole\Client' => [
            '__construct' => ['type', 'async', 'id'],
            'set' => ['settings'],
            'connect' => ['host', 'port', 'timeout', 'sock_flag'],
            'send' => ['data'],                                         // Swoole: + flag
            'recv' => ['size', 'flag'],
            'close' => ['force'],
            'isConnected' => [],
        ],
        'Swoole\Timer' => [
            'tick' => ['ms', 'callback', 'params'],
            'after' => ['ms', 'callback', 'params'],
            'clear' => ['timer_id'],
        ],
    ];

    /** Swoole 5.1's functions taskq declares, with Swoole's parameter names. */
    private const SWOOLE_FUNCTION_NAMES = [
        'swoole_version' => [],
        'swoole_set_process_name' => ['process_name'],
        'swoole_timer_tick' => ['ms', 'callback', 'params'],
        'swoole_timer_after' => ['ms', 'callback', 'params'],
        'swoole_timer_clear' => ['timer_id'],
    ];

    /**
     * taskq's own methods of the Swoole classes, with taskq's names: not in
     * Swoole 5.1 (tick/after/clearTimer left Swoole\Server with 5.0).
     */
    private const TASKQ_ONLY_NAMES = [
        'Swoole\Server' => [
            'failedTasks' => ['offset', 'limit'],
            'retryFailed' => ['ids'],
            'purgeFailed' => ['ids'],
            'tick' => ['ms', 'callback'],
            'after' => ['ms', 'callback'],
            'clearTimer' => ['timerId'],
        ],
        'Swoole\Client' => [
            'task' => ['data', 'options'],
            'taskMulti' => ['tasks', 'options'],
            'batch' => ['name'],
        ],
        'Swoole\Timer' => [],
    ];

    /** Parameter names of a function or method, as Reflection reports them. */
    private static function parameterNames(ReflectionFunctionAbstract $f): array
    {
        return array_map(fn (ReflectionParameter $p) => $p->getName(), $f->getParameters());
    }

    /**
     * Reflection shows the names of the two tables above for every public
     * method of the Swoole classes, and every method is in one table, so a
     * renamed parameter or an unlisted new method fails here.
     */
    public function testParameterNamesAreSwoolesForSwoolesMethodsAndTaskqsForItsOwn(): void
    {
        foreach (self::SWOOLE_NAMES as $class => $methods) {
            $expected = $methods + self::TASKQ_ONLY_NAMES[$class];
            $actual = [];
            foreach ((new ReflectionClass($class))->getMethods(ReflectionMethod::IS_PUBLIC) as $m) {
                $actual[$m->getName()] = self::parameterNames($m);
            }
            ksort($expected);
            ksort($actual);
            $this->assertSame($expected, $actual, "$class: every public method and its parameter names");
        }
        foreach (self::SWOOLE_FUNCTION_NAMES as $function => $names) {
            $this->assertSame($names, self::parameterNames(new ReflectionFunction($function)), "$function()");
        }
        // The aliases are the same classes, so they show the same names.
        $this->assertSame(['data', 'taskWorkerIndex', 'finishCallback'], self::parameterNames(new ReflectionMethod('swoole_server', 'task')));
        $this->assertSame(['host', 'port', 'timeout', 'sock_flag'], self::parameterNames(new ReflectionMethod('TaskClient', 'connect')));
    }

    /**
     * A Swoole app's calls with named arguments against a started server:
     * the server is built, configured and fed with Swoole's names, its
     * worker calls task()/taskwait()/send()/getClientInfo()/getClientList()/
     * getWorkerPid() with them, and the client connects, sends and receives
     * with them. Each named task lands on the task worker it names.
     */
    public function testSwooleNamedArgumentsWorkAgainstARunningServer(): void
    {
        $server = $this->startServer(<<<'PHP'
$s = new Swoole\Server(host: '127.0.0.1', port: $port, mode: SWOOLE_PROCESS, sock_type: SWOOLE_SOCK_TCP);
$s->set(settings: ['worker_num' => 1, 'task_worker_num' => 2, 'log_file' => "$dir/taskq.log"]);
$s->on(event_name: 'Receive', callback: function (Swoole\Server $s, int $fd, int $reactorId, string $data) {
    $waited = $s->taskwait(data: "wait-$data", timeout: 5.0, taskWorkerIndex: 0);
    $info = $s->getClientInfo(fd: $fd, reactor_id: -1, ignoreError: false);
    record('receive', [
        'waited' => $waited,
        'info_port' => is_array($info) ? $info['remote_port'] : null,
        'listed' => in_array($fd, $s->getClientList(start_fd: 0, find_count: 10) ?: [], true),
        'task_worker_pid' => $s->getWorkerPid(worker_id: 2),
        'task_worker_status' => $s->getWorkerStatus(worker_id: 2),
    ]);
    $s->task(data: $data, taskWorkerIndex: 1, finishCallback: function (Swoole\Server $s, int $taskId, mixed $result) use ($fd) {
        $s->send(fd: $fd, send_data: "finished: $result");
    });
});
$s->on(event_name: 'Task', callback: function (Swoole\Server $s, int $taskId, int $srcWorkerId, mixed $data) {
    record('task', ['data' => $data, 'worker_id' => $s->worker_id]);
    return "done $data";
});
$s->on(event_name: 'Finish', callback: fn () => null);
$s->start();
PHP);
        [$exit, $out, $err] = $this->runPhp(<<<PHP
<?php
\$c = new Swoole\\Client(type: SWOOLE_SOCK_TCP, async: SWOOLE_SOCK_SYNC);
\$connected = \$c->connect(host: '127.0.0.1', port: {$this->port}, timeout: 5.0, sock_flag: 0);
\$sent = \$c->send(data: 'named');
\$reply = \$c->recv(size: 65535, flag: 0);
echo json_encode([\$connected, \$sent, \$reply, \$c->close(force: true)]);
PHP, 15);
        $this->assertSame([0, ''], [$exit, $err], $out);
        $this->assertSame([true, 5, 'finished: done named', true], json_decode($out, true));

        $receive = $this->waitEvents('receive', 1, 10, $server)[0];
        $this->assertSame('done wait-named', $receive['waited'], 'taskwait(data:, timeout:, taskWorkerIndex:)');
        $this->assertIsInt($receive['info_port'], 'getClientInfo(fd:, reactor_id:, ignoreError:)');
        $this->assertTrue($receive['listed'], 'getClientList(start_fd:, find_count:)');
        $this->assertGreaterThan(0, $receive['task_worker_pid'], 'getWorkerPid(worker_id:)');
        $this->assertContains($receive['task_worker_status'], [1, 2], 'getWorkerStatus(worker_id:)');
        $tasks = array_column($this->waitEvents('task', 2, 10, $server), 'worker_id', 'data');
        ksort($tasks);
        $this->assertSame(['named' => 2, 'wait-named' => 1], $tasks, 'taskWorkerIndex 1 and 0 are worker ids 2 and 1');
        $this->stopServer($server);
    }
}
