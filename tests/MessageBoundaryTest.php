<?php
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;

/**
 * Message boundaries: one TaskClient send() is exactly one onReceive however
 * fast or big; foreign clients get raw chunks or the server's configured
 * framing (length / EOF); bad input closes only the offending connection.
 */
final class MessageBoundaryTest extends TaskqTestCase
{
    private const MAGIC = "\x89TASKQ\r\n";

    /**
     * A server whose onReceive records each payload and runs `$onReceive`
     * (PHP code seeing $server, $fd, $data). `$settings` is PHP code for
     * extra set() entries. `$recordAs`:
     *  - 'event': record('receive', fd + base64 payload) into events.log;
     *  - 'digest': one line "fd len crc32 md5" per call appended to recv.txt (cheap).
     */
    private function server(string $settings = '', string $onReceive = '', string $recordAs = 'event', int $workers = 1): ServerProcess
    {
        $rec = $recordAs === 'event'
            ? "record('receive', ['fd' => \$fd, 'data' => base64_encode(\$data)]);"
            : "static \$fh; \$fh ??= fopen(\$GLOBALS['dir'] . '/recv.txt', 'a'); fwrite(\$fh, \$fd . ' ' . strlen(\$data) . ' ' . crc32(\$data) . ' ' . md5(\$data) . \"\\n\");";
        $body = <<<PHP
\$server = new TaskServer('127.0.0.1', \$port);
\$server->set(['worker_num' => $workers, 'log_file' => \$dir . '/taskq.log', $settings]);
\$server->on('Connect', function (\$server, \$fd, \$rid) { record('connect', ['fd' => \$fd]); });
\$server->on('Receive', function (\$server, \$fd, \$rid, \$data) {
    $rec
    $onReceive
});
\$server->on('Close', function (\$server, \$fd, \$rid) { record('close', ['fd' => \$fd]); });
\$server->start();
PHP;
        return $this->startServer($body);
    }

    /** Payloads recorded by 'event' servers, in order (optionally of one fd). */
    private function received(?int $fd = null): array
    {
        $out = [];
        foreach ($this->events('receive') as $e) {
            if ($fd === null || $e['fd'] === $fd) {
                $out[] = base64_decode($e['data']);
            }
        }
        return $out;
    }

    /** Lines of recv.txt written by 'digest' servers. */
    private function digests(): array
    {
        $f = "$this->dir/recv.txt";
        return is_file($f) ? file($f, FILE_IGNORE_NEW_LINES) : [];
    }

    private static function digest(string $p): string
    {
        return strlen($p) . ' ' . crc32($p) . ' ' . md5($p);
    }

    /** @return resource a raw TCP connection to the test server */
    private function rawConnect(int $port)
    {
        $ctx = stream_context_create(['socket' => ['tcp_nodelay' => true]]);
        $s = stream_socket_client("tcp://127.0.0.1:$port", $errno, $errstr, 2, STREAM_CLIENT_CONNECT, $ctx);
        $this->assertNotFalse($s, "raw connect: $errstr");
        stream_set_timeout($s, 5);
        return $s;
    }

    private function writeAll($s, string $data): void
    {
        $off = 0;
        $deadline = microtime(true) + 10;
        while ($off < strlen($data)) {
            $n = fwrite($s, substr($data, $off));
            $this->assertNotFalse($n, 'fwrite failed');
            $off += $n;
            $this->assertLessThan($deadline, microtime(true), 'writing timed out');
        }
    }

    /** Reads until the server closes the connection; fails if it does not within the stream timeout. */
    private function assertClosedByServer($s, string $what): void
    {
        $deadline = microtime(true) + 5;
        $junk = '';
        while (!feof($s) && microtime(true) < $deadline) {
            $chunk = fread($s, 65536);
            if ($chunk === false) {
                break;
            }
            $junk .= $chunk;
            if ($chunk === '' && stream_get_meta_data($s)['timed_out']) {
                break;
            }
        }
        $this->assertTrue(feof($s), "$what: the server closes the connection (read so far: " . bin2hex(substr($junk, 0, 64)) . ')');
        fclose($s);
    }

    /** Id of the connection whose connect event came `$nth` (0-based). */
    private function connectFd(int $nth, ServerProcess $server): int
    {
        return $this->waitEvents('connect', $nth + 1, 5, $server)[$nth]['fd'];
    }

    /** A TaskClient round trip against an echoing server proves it still serves. */
    private function assertStillServes(int $port, string $payload): void
    {
        $c = new TaskClient(TASKQ_SOCK_TCP);
        $this->assertTrue($c->connect('127.0.0.1', $port, 3), 'another client can still connect');
        $this->assertSame(strlen($payload), $c->send($payload));
        $this->assertSame($payload, $c->recv(), 'and gets its echo');
        $c->close();
    }

    // ------------------------------------------------------- taskq protocol

    public function testTenThousandBackToBackSendsAreTenThousandOnReceivesInOrder(): void
    {
        $server = $this->server('', '', 'digest');
        $payloads = [];
        for ($i = 0; $i < 10000; $i++) {
            $len = 1 + ($i * 7919) % 2000;
            if ($i % 10 === 3) {
                $p = random_bytes($len); // binary, NULs included
            } else {
                $base = "msg-$i" . ($i % 7 === 0 ? "\0\xff\r\n" : '|');
                $p = substr(str_repeat($base, intdiv($len, strlen($base)) + 1), 0, $len);
            }
            $payloads[] = $p;
        }
        $payloads[5] = "\0"; // a lone NUL byte
        $payloads[6] = self::MAGIC; // the magic itself as a payload

        $client = new TaskClient(TASKQ_SOCK_TCP);
        $this->assertTrue($client->connect('127.0.0.1', $this->port, 5));
        $t0 = microtime(true);
        foreach ($payloads as $i => $p) {
            $n = $client->send($p);
            if ($n !== strlen($p)) {
                $this->fail("send #$i returned " . var_export($n, true) . ' instead of ' . strlen($p));
            }
        }
        $client->close();
        $this->waitEvents('close', 1, 15, $server);
        $this->assertLessThan(20, microtime(true) - $t0);

        $got = $this->digests();
        $this->assertCount(10000, $got, 'exactly one onReceive per send()');
        $fd = (int) explode(' ', $got[0])[0];
        $expected = array_map(fn ($p) => "$fd " . self::digest($p), $payloads);
        foreach ($expected as $i => $line) {
            if ($got[$i] !== $line) {
                $this->fail("onReceive #$i differs: expected '$line', got '{$got[$i]}'");
            }
        }
        $this->assertSame($expected, $got);
    }

    public function testAnEightMebibyteSendIsExactlyOneOnReceive(): void
    {
        $server = $this->server('', '', 'digest');
        $payload = random_bytes(8 << 20);
        $client = new TaskClient(TASKQ_SOCK_TCP);
        $this->assertTrue($client->connect('127.0.0.1', $this->port, 5));
        $this->assertSame(8 << 20, $client->send($payload));
        $this->assertSame(5, $client->send('after'));
        $client->close();
        $this->waitEvents('close', 1, 10, $server);
        $got = $this->digests();
        $fd = $this->events('close')[0]['fd'];
        $this->assertSame(["$fd " . self::digest($payload), "$fd " . self::digest('after')], $got);
    }

    public function testManyParallelClientsEveryMessageArrivesExactlyOnce(): void
    {
        $clients = 20;
        $perClient = 200;
        $server = $this->startServer(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 4, 'dispatch_mode' => 2, 'log_file' => $dir . '/taskq.log']);
$server->on('Receive', function ($server, $fd, $rid, $data) {
    file_put_contents($GLOBALS['dir'] . '/recv.txt', $data . "\n", FILE_APPEND | LOCK_EX);
});
$server->on('Close', function ($server, $fd, $rid) { record('close', ['fd' => $fd]); });
$server->start();
PHP);
        $script = "$this->dir/parallel-client.php";
        file_put_contents($script, <<<'PHP'
<?php
[, $port, $k, $n] = $argv;
$c = new TaskClient(TASKQ_SOCK_TCP);
if (!$c->connect('127.0.0.1', (int) $port, 5)) {
    exit(2);
}
for ($j = 0; $j < $n; $j++) {
    $msg = "c$k-m$j-" . str_repeat(chr(97 + ($j % 26)), ($k * 31 + $j * 17) % 700);
    if ($c->send($msg) !== strlen($msg)) {
        exit(3);
    }
}
$c->close();
echo "done $k";
PHP);
        $procs = [];
        for ($k = 0; $k < $clients; $k++) {
            $cmd = self::phpCommand($script, 15, [(string) $this->port, (string) $k, (string) $perClient]);
            $p = proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes, $this->dir);
            $this->assertIsResource($p);
            $procs[$k] = [$p, $pipes];
        }
        foreach ($procs as $k => [$p, $pipes]) {
            $out = stream_get_contents($pipes[1]);
            $err = stream_get_contents($pipes[2]);
            fclose($pipes[1]);
            fclose($pipes[2]);
            $code = proc_close($p);
            $this->assertSame([0, "done $k", ''], [$code, $out, $err], "client $k");
        }
        $this->waitEvents('close', $clients, 10, $server);

        $lines = file("$this->dir/recv.txt", FILE_IGNORE_NEW_LINES);
        $this->assertCount($clients * $perClient, $lines, 'every message exactly once (count)');
        $byClient = [];
        foreach ($lines as $line) {
            $this->assertMatchesRegularExpression('/^c(\d+)-m(\d+)-([a-z]*)$/', $line);
            preg_match('/^c(\d+)-m(\d+)-/', $line, $m);
            $byClient[(int) $m[1]][] = $line;
        }
        ksort($byClient);
        $this->assertSame(range(0, $clients - 1), array_keys($byClient));
        for ($k = 0; $k < $clients; $k++) {
            $expected = [];
            for ($j = 0; $j < $perClient; $j++) {
                $expected[] = "c$k-m$j-" . str_repeat(chr(97 + ($j % 26)), ($k * 31 + $j * 17) % 700);
            }
            // dispatch_mode 2 keeps a connection on one worker, so per-client order holds too.
            $this->assertSame($expected, $byClient[$k], "client $k: every message once, in order");
        }
    }

    // ------------------------------------------------------ foreign clients

    public function testForeignRawClientDataArrivesUnframed(): void
    {
        $server = $this->server();
        $s = $this->rawConnect($this->port);
        $sent = '';
        for ($i = 0; $i < 50; $i++) {
            $chunk = "chunk-$i;" . str_repeat("\0x", $i * 13);
            $this->writeAll($s, $chunk);
            $sent .= $chunk;
        }
        fclose($s);
        $this->waitEvents('close', 1, 5, $server);
        $got = $this->received();
        $this->assertSame($sent, implode('', $got), 'the concatenated onReceive data is exactly what was written');
        $this->assertGreaterThanOrEqual(1, count($got));
        $this->assertLessThanOrEqual(50, count($got), 'raw semantics: chunks may merge, never more onReceive than writes');
    }

    public function testForeignRawClientShortMessageIsDeliveredWithoutWaitingForMore(): void
    {
        $server = $this->server('', '$server->send($fd, "echo:" . $data);');
        $s = $this->rawConnect($this->port);
        $this->writeAll($s, 'hi'); // fewer bytes than the magic: must not wait for more
        $reply = fread($s, 100);
        $this->assertSame('echo:hi', $reply, 'a raw client gets a raw reply to a 2-byte message');
        fclose($s);
        $this->assertSame(['hi'], $this->received());
    }

    public function testForeignClientStartingLikeTheMagicIsStillARawClient(): void
    {
        $server = $this->server('', '$server->send($fd, "echo:" . $data);');
        $s = $this->rawConnect($this->port);
        $this->writeAll($s, "\x89TA");
        // Ambiguous so far; the next bytes reveal a foreign client.
        $this->writeAll($s, "SK-not-magic");
        $reply = '';
        $deadline = microtime(true) + 5;
        while (strlen($reply) < strlen("echo:\x89TASK-not-magic") && microtime(true) < $deadline && !feof($s)) {
            $reply .= (string) fread($s, 100);
        }
        fclose($s);
        $this->waitEvents('close', 1, 5, $server);
        $this->assertSame("\x89TASK-not-magic", implode('', $this->received()));
    }

    // ------------------------------------------------ open_length_check

    private const LENGTH_SETTINGS = "'open_length_check' => true, 'package_length_type' => 'N', 'package_length_offset' => 0, 'package_body_offset' => 4, 'package_max_length' => 65536";

    public function testLengthCheckDeliversWholePacketsWhateverTheWrites(): void
    {
        $server = $this->server(self::LENGTH_SETTINGS);
        $packets = [];
        for ($i = 0; $i < 50; $i++) {
            $body = $i >= 40 && $i < 45
                ? "p$i"
                : "pkt-$i-" . str_repeat(chr(65 + $i % 26), ($i * 37) % 500) . ($i % 3 ? "\0\r\n" : '');
            $packets[] = pack('N', strlen($body)) . $body;
        }
        $s = $this->rawConnect($this->port);
        // 0..39 in one write.
        $this->writeAll($s, implode('', array_slice($packets, 0, 40)));
        // 40..44 byte by byte.
        foreach (str_split(implode('', array_slice($packets, 40, 5))) as $byte) {
            $this->writeAll($s, $byte);
            usleep(300);
        }
        // 45..49 in 7-byte pieces that straddle headers and bodies.
        foreach (str_split(implode('', array_slice($packets, 45)), 7) as $piece) {
            $this->writeAll($s, $piece);
            usleep(300);
        }
        $this->waitEvents('receive', 50, 5, $server);
        fclose($s);
        $this->waitEvents('close', 1, 5, $server);
        $this->assertSame($packets, $this->received(), 'exactly 50 onReceive, each one whole packet with its header');
    }

    public function testOversizedLengthClosesOnlyThatConnection(): void
    {
        $server = $this->server(self::LENGTH_SETTINGS);
        $good = $this->rawConnect($this->port);
        $goodFd = $this->connectFd(0, $server);
        $p1 = pack('N', 5) . 'first';
        $this->writeAll($good, $p1);
        $this->waitEvents('receive', 1, 5, $server);

        $bad = $this->rawConnect($this->port);
        $badFd = $this->connectFd(1, $server);
        $this->writeAll($bad, pack('N', 100000) . 'abcdefgh');
        $this->assertClosedByServer($bad, 'a packet announcing 100000 bytes over package_max_length 65536');
        // The packet length is the announced body length plus package_body_offset (100004).
        $this->waitUntil(
            fn () => preg_match('/\b10000[04]\b.*package_max_length|package_max_length.*\b10000[04]\b/', $this->log()),
            5,
            'the log to mention the oversized packet and package_max_length',
            $server,
        );
        $this->waitUntil(fn () => array_filter($this->events('close'), fn ($e) => $e['fd'] === $badFd), 5, 'onClose of the bad connection', $server);

        $p2 = pack('N', 6) . 'second';
        $this->writeAll($good, $p2);
        $this->waitEvents('receive', 2, 5, $server);
        $this->assertFalse(feof($good), 'the other connection stays open');
        fclose($good);
        $this->waitUntil(fn () => count($this->events('close')) >= 2, 5, 'onClose of the good connection', $server);
        $this->assertSame([$p1, $p2], $this->received(), 'nothing of the bad connection reached onReceive');
        $this->assertSame([], $this->received($badFd));
        $this->assertSame([$p1, $p2], $this->received($goodFd));
    }

    // ------------------------------------------------------ EOF framing

    public function testEofSplitYieldsOneOnReceivePerPacketIncludingTheEof(): void
    {
        $server = $this->server("'open_eof_split' => true, 'package_eof' => \"\\r\\n\"");
        $s = $this->rawConnect($this->port);
        $this->writeAll($s, "a\r\nbb\r\nccc\r\n"); // merged
        foreach (['dd', "d\r", "\nee\r\n", "f", "\r", "\n"] as $piece) { // split, EOF split too
            usleep(2000);
            $this->writeAll($s, $piece);
        }
        $this->waitEvents('receive', 6, 5, $server);
        fclose($s);
        $this->waitEvents('close', 1, 5, $server);
        $this->assertSame(["a\r\n", "bb\r\n", "ccc\r\n", "ddd\r\n", "ee\r\n", "f\r\n"], $this->received());
    }

    public function testEofCheckDeliversBuffersEndingWithTheEof(): void
    {
        $server = $this->server("'open_eof_check' => true, 'package_eof' => \"\\r\\n\"");
        $s = $this->rawConnect($this->port);
        $this->writeAll($s, "x\r\ny"); // does not end with the EOF: held back
        usleep(20000);
        $this->writeAll($s, "y\r\n");
        $this->waitEvents('receive', 1, 5, $server);
        $this->writeAll($s, "z\r\nw\r\n");
        $this->waitUntil(fn () => strlen(implode('', $this->received())) >= 13, 5, 'all data', $server);
        fclose($s);
        $this->waitEvents('close', 1, 5, $server);
        $got = $this->received();
        $this->assertSame("x\r\nyy\r\nz\r\nw\r\n", implode('', $got));
        foreach ($got as $buf) {
            $this->assertStringEndsWith("\r\n", $buf, 'every onReceive buffer ends with the EOF');
        }
        $this->assertSame("x\r\nyy\r\n", $got[0], 'the first buffer waited for its EOF and carries both packets');
    }

    // ------------------------------------------ client-side length framing

    public function testTaskClientWithLengthFramingTalksToALengthFramedServer(): void
    {
        $settings = "'open_length_check' => true, 'package_length_type' => 'N', 'package_length_offset' => 0, 'package_body_offset' => 4, 'package_max_length' => 1 << 20";
        $server = $this->server(
            $settings,
            '$body = substr($data, 4); $r1 = "re:" . $body; $r2 = str_repeat("B", 200000);'
            . ' $server->send($fd, pack("N", strlen($r1)) . $r1 . pack("N", strlen($r2)) . $r2);'
        );
        $client = new TaskClient(TASKQ_SOCK_TCP);
        $this->assertTrue($client->set(['open_length_check' => true, 'package_length_type' => 'N', 'package_length_offset' => 0, 'package_body_offset' => 4, 'package_max_length' => 1 << 20]));
        $this->assertTrue($client->connect('127.0.0.1', $this->port, 3));
        $body = "hello\0framed";
        $packet = pack('N', strlen($body)) . $body;
        $this->assertSame(strlen($packet), $client->send($packet));

        $this->assertSame(pack('N', strlen("re:$body")) . "re:$body", $client->recv(), 'one recv() = one whole packet, header included');
        $second = $client->recv();
        $this->assertSame(200004, strlen((string) $second), 'the next recv() is the next whole packet, however big');
        $this->assertSame(pack('N', 200000) . str_repeat('B', 200000), $second);
        $client->close();
        $this->waitEvents('close', 1, 5, $server);
        $this->assertSame([$packet], $this->received(), 'the server got the client packet as one onReceive, no magic');
    }

    // ------------------------------------------- bad taskq-protocol input

    private function echoServerSmallMax(): ServerProcess
    {
        return $this->server("'package_max_length' => 65536", '$server->send($fd, $data);');
    }

    public function testAValidHandCraftedTaskqFrameIsDelivered(): void
    {
        // Positive control for the garbage tests below: the hand-made frame layout is right.
        $server = $this->echoServerSmallMax();
        $s = $this->rawConnect($this->port);
        $this->writeAll($s, self::MAGIC . pack('N', 6) . "\x01hello" . pack('N', 3) . "\x01ok");
        $this->waitEvents('receive', 2, 5, $server);
        fclose($s);
        $this->assertSame(['hello', 'ok'], $this->received());
    }

    public function testUnknownFrameKindClosesTheConnectionAndTheServerKeepsServing(): void
    {
        $server = $this->echoServerSmallMax();
        $bad = $this->rawConnect($this->port);
        $badFd = $this->connectFd(0, $server);
        $this->writeAll($bad, self::MAGIC . pack('N', 6) . "\x63hello");
        $this->assertClosedByServer($bad, 'a frame of unknown kind 99');
        $this->waitUntil(fn () => str_contains($this->log(), '99'), 5, 'the log to mention the bad frame', $server);
        $this->assertSame([], $this->received($badFd));
        $this->assertStillServes($this->port, 'still alive');
    }

    public function testOversizedFrameClosesTheConnectionAndTheServerKeepsServing(): void
    {
        $server = $this->echoServerSmallMax();
        $bad = $this->rawConnect($this->port);
        $badFd = $this->connectFd(0, $server);
        $this->writeAll($bad, self::MAGIC . pack('N', 100000) . "\x01abc");
        $this->assertClosedByServer($bad, 'a frame announcing 100000 bytes over package_max_length 65536');
        $this->waitUntil(fn () => str_contains($this->log(), '100000'), 5, 'the log to mention the oversized frame', $server);
        $this->assertSame([], $this->received($badFd));
        $this->assertStillServes($this->port, 'still alive');
    }

    public function testZeroLengthFrameClosesTheConnectionAndTheServerKeepsServing(): void
    {
        $server = $this->echoServerSmallMax();
        $bad = $this->rawConnect($this->port);
        $badFd = $this->connectFd(0, $server);
        $this->writeAll($bad, self::MAGIC . pack('N', 0) . "\x01abc");
        $this->assertClosedByServer($bad, 'a zero-length frame');
        $this->assertSame([], $this->received($badFd));
        $this->assertStillServes($this->port, 'still alive');
    }

    public function testTaskClientOverTheLimitIsClosedAndOthersKeepWorking(): void
    {
        $server = $this->echoServerSmallMax();
        $client = new TaskClient(TASKQ_SOCK_TCP);
        $this->assertTrue($client->connect('127.0.0.1', $this->port, 3));
        $this->assertSame(65536, $client->send(str_repeat('m', 65536)), 'exactly package_max_length is fine');
        $this->assertSame(65536, strlen((string) $client->recv()));
        // The server may reset the connection while we still write or read: collect those warnings.
        set_error_handler(fn () => true, E_WARNING);
        try {
            $client->send(str_repeat('o', 65537));
            $r = $client->recv();
        } finally {
            restore_error_handler();
        }
        $this->assertContains($r, ['', false], 'over package_max_length: the server closes the connection');
        $this->assertNotSame(11, $client->errCode, 'closed, not a timeout');
        @$client->close();
        $this->assertStillServes($this->port, 'still alive');
    }
}
