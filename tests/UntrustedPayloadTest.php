<?php
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;

/**
 * No stranger's objects (issue 12, item 8). Anyone who can connect may send
 * a task frame; its PHP-serialized payload must never become an object of a
 * class the server did not allow in `task_allowed_classes` (unserializing
 * one runs its __wakeup/__destruct in the task worker), must not nest
 * deeper than `task_max_depth`, and must be refused before the ack when it
 * is not valid serialize() output at all. Tasks the server's own workers
 * create with $server->task() keep full PHP values.
 *
 * The attacks are written as raw frames on a plain socket, as a client
 * without the extension would send them.
 */
final class UntrustedPayloadTest extends TaskqTestCase
{
    /**
     * Settings from TASKQ_SETTINGS (JSON). Gadget writes "<path>.wakeup" and
     * "<path>.destruct" when PHP brings one to life. onReceive "internal"
     * queues a task holding an ArrayObject; onTask records what it got.
     */
    private const SERVER = <<<'PHP'
class Gadget
{
    public $path = '';
    public function __wakeup() { if ($this->path !== '') { file_put_contents("$this->path.wakeup", 'x'); } }
    public function __destruct() { if ($this->path !== '') { file_put_contents("$this->path.destruct", 'x'); } }
}
$settings = json_decode(getenv('TASKQ_SETTINGS'), true) + ['worker_num' => 1, 'task_worker_num' => 1, 'log_file' => "$dir/taskq.log"];
$server = new TaskServer('127.0.0.1', $port);
$server->set($settings);
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) {
    if ($data === 'internal') {
        $s->task(['label' => 'internal', 'obj' => new ArrayObject([1, 2])]);
    }
    $s->send($fd, "ok:$data");
});
$server->on('Task', function ($s, $taskId, $src, $data) {
    record('task', [
        'type' => get_debug_type($data),
        'label' => is_array($data) ? ($data['label'] ?? null) : null,
        'inner' => is_array($data) && isset($data['obj']) ? get_debug_type($data['obj']) : null,
        'data' => is_array($data) || is_string($data) ? $data : null,
    ]);
});
$server->start();
PHP;

    /** Helpers for the attacking client: taskq frames written by hand. */
    private const RAW = <<<'PHP'
function frame(int $kind, string $body): string { return pack('N', strlen($body) + 1) . chr($kind) . $body; }
/** A KIND_TASK frame: encoding, priority, delay (ms), max attempts, payload. */
function taskFrame(string $payload, int $encoding = 1): string { return frame(2, chr($encoding) . pack('N', 0) . pack('J', 0) . pack('N', 0) . $payload); }
function readFrame($s): ?array {
    $head = fread($s, 4);
    if (strlen($head) < 4) { return null; }
    $len = unpack('N', $head)[1];
    $body = '';
    while (strlen($body) < $len && !feof($s)) { $body .= fread($s, $len - strlen($body)); }
    $kind = ord($body[0]);
    return $kind === 4
        ? ['error' => unpack('N', substr($body, 1, 4))[1], 'message' => substr($body, 5)]
        : ['ack' => unpack('J', substr($body, 1, 8))[1]];
}
/** Sends each payload as a task on its own raw connection; returns the answers. */
function attack(array $payloads): array {
    global $port;
    $out = [];
    foreach ($payloads as $key => $payload) {
        $s = stream_socket_client("tcp://127.0.0.1:$port", $errno, $errstr, 3);
        stream_set_timeout($s, 5);
        fwrite($s, "\x89TASKQ\r\n" . taskFrame($payload));
        $out[$key] = readFrame($s);
        fclose($s);
    }
    return $out;
}
PHP;

    private function server(array $settings = []): ServerProcess
    {
        $server = $this->startServer(self::SERVER, ['TASKQ_SETTINGS' => json_encode($settings)]);
        $this->waitEvents('workerstart', 2, 5, $server);
        return $server;
    }

    /** Runs the raw attack over `$payloads` (PHP expression for an array); returns the answers. */
    private function attack(string $payloads): array
    {
        $code = "<?php\n\$port = {$this->port};\n" . self::RAW . "\necho json_encode(attack($payloads));\n";
        [$exit, $out, $err] = $this->runPhp($code, 20);
        $this->assertSame(0, $exit, "attack failed: $out $err");
        $answers = json_decode($out, true);
        $this->assertIsArray($answers, $out);
        return $answers;
    }

    /** A task that runs after everything sent before it was handled: the task worker is done with the attack. */
    private function settle(ServerProcess $server): void
    {
        $this->client('if ($c->task(["label" => "settle"]) === false) { fwrite(STDERR, $c->errMsg); }');
        $this->waitUntil(fn () => in_array('settle', array_column($this->events('task'), 'label'), true), 5, 'the settling task', $server);
    }

    /** A serialized Gadget whose magic methods would write next to `$path`. */
    private static function gadget(string $path, string $class = 'Gadget'): string
    {
        return sprintf('O:%d:"%s":1:{s:4:"path";s:%d:"%s";}', strlen($class), $class, strlen($path), $path);
    }

    public function testAGadgetFromTheNetworkIsRefusedBeforeTheAckAndNeverComesToLife(): void
    {
        $server = $this->server();
        $p = "$this->dir/pwned";
        $g = self::gadget($p);
        $payloads = [
            'top' => $g,
            'nested' => 'a:2:{s:5:"label";s:6:"nested";s:1:"x";a:1:{i:0;' . $g . '}}',
            'serializable' => 'C:6:"Gadget":0:{}',
            'enum' => 'E:11:"Gadget:Case";',
        ];
        $answers = $this->attack(var_export($payloads, true));
        foreach ($answers as $key => $a) {
            $this->assertSame(9005, $a['error'] ?? null, "$key: refused, not acknowledged: " . json_encode($a));
            $this->assertStringContainsString("an object of class 'Gadget'", $a['message']);
            $this->assertStringContainsString('task_allowed_classes', $a['message']);
        }
        $this->settle($server);
        $this->assertFileDoesNotExist("$p.wakeup", '__wakeup never ran');
        $this->assertFileDoesNotExist("$p.destruct", '__destruct never ran');
        $this->assertSame(['settle'], array_column($this->events('task'), 'label'), 'no refused task reached onTask');
        $this->assertStringContainsString("task refused: the task payload holds an object of class 'Gadget'", $this->log());
    }

    public function testATaskClientObjectIsRefusedWithTheReason(): void
    {
        $this->server();
        $out = $this->client(<<<'PHP'
$o = new stdClass;
$o->to = 'x';
echo json_encode([@$c->task(['label' => 'obj', 'o' => $o]), $c->errCode, $c->errMsg, $c->task(['label' => 'plain', 'n' => [1, [2, 3]]]) !== false]);
PHP);
        [$id, $code, $msg, $plainOk] = json_decode($out, true);
        $this->assertFalse($id);
        $this->assertSame(9005, $code);
        $this->assertStringContainsString("an object of class 'stdClass'", $msg);
        $this->assertTrue($plainOk, 'the same connection still queues plain values');
        $tasks = $this->waitEvents('task', 1);
        $this->assertSame([['label' => 'plain', 'n' => [1, [2, 3]]]], array_column($tasks, 'data'), 'arrays arrive intact');
    }

    public function testACorruptPayloadIsRefusedBeforeTheAckAndNotRun(): void
    {
        $server = $this->server();
        $answers = $this->attack(var_export([
            'short string' => 'a:1:{i:0;s:9:"ab";}',
            'truncated' => 'a:2:{i:0;i:1;',
            'garbage' => 'not serialized at all',
            'trailing' => 'i:1;i:2;',
        ], true));
        foreach ($answers as $key => $a) {
            $this->assertSame(9005, $a['error'] ?? null, "$key: refused, not acknowledged: " . json_encode($a));
            $this->assertStringContainsString('the task payload is not valid PHP serialize() data', $a['message']);
        }
        $this->assertStringContainsString('a string longer than the data at byte 14', $answers['short string']['message']);
        $this->settle($server);
        $this->assertSame(['settle'], array_column($this->events('task'), 'label'), 'onTask never got false for a corrupt payload');
    }

    public function testNestingBeyondTaskMaxDepthIsRefused(): void
    {
        $this->server(['task_max_depth' => 3]);
        $out = $this->client(<<<'PHP'
$ok = $c->task(['label' => 'three', 'x' => [[1]]]);
$deep = @$c->task(['label' => 'four', 'x' => [[[1]]]]);
echo json_encode([$ok !== false, $deep, $c->errCode, $c->errMsg]);
PHP);
        [$ok, $deep, $code, $msg] = json_decode($out, true);
        $this->assertTrue($ok, 'three levels are within task_max_depth 3');
        $this->assertFalse($deep);
        $this->assertSame(9005, $code);
        $this->assertStringContainsString('deeper than task_max_depth (3)', $msg);
        $this->waitEvents('task', 1);
        usleep(200000);
        $this->assertSame(['three'], array_column($this->events('task'), 'label'));
    }

    public function testTaskAllowedClassesLetsTheListedClassesThrough(): void
    {
        $server = $this->server(['task_allowed_classes' => ['gadget']]);
        $p = "$this->dir/allowed";
        $answers = $this->attack(var_export(['allowed' => self::gadget($p), 'other' => self::gadget("$this->dir/other", 'Other')], true));
        $this->assertIsInt($answers['allowed']['ack'] ?? null, 'a listed class is accepted: ' . json_encode($answers['allowed']));
        $this->assertSame(9005, $answers['other']['error'] ?? null, 'an unlisted class is still refused');
        $this->settle($server);
        $this->assertContains('Gadget', array_column($this->events('task'), 'type'), 'onTask got the object');
        $this->assertFileExists("$p.wakeup", 'the operator opted in: the class is unserialized for real');
    }

    public function testAPayloadTheTaskWorkerCannotUnserializeFailsTheTaskInsteadOfRunningItWithFalse(): void
    {
        // Gadget is allowed, but it is no enum: only PHP can tell, in the task worker
        $server = $this->server(['task_allowed_classes' => ['Gadget'], 'task_retry_max' => 0]);
        $answers = $this->attack(var_export(['enum' => 'E:11:"Gadget:Case";'], true));
        $this->assertIsInt($answers['enum']['ack'] ?? null, json_encode($answers));
        $this->settle($server);
        $this->waitLog('the task payload from the network could not be unserialized', 5, $server);
        $this->assertSame(['array'], array_values(array_unique(array_column($this->events('task'), 'type'))), 'onTask never got false');
    }

    public function testTasksFromTheServersOwnWorkersKeepObjects(): void
    {
        $server = $this->server();
        $this->assertSame('ok:internal', $this->client('$c->send("internal"); echo $c->recv();'));
        $task = $this->waitEvents('task', 1, 5, $server)[0];
        $this->assertSame('internal', $task['label']);
        $this->assertSame('ArrayObject', $task['inner'], '$server->task() values are not restricted');
    }
}
