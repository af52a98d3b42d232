<?php
use TaskQ\Tests\Support\TaskqTestCase;

/**
 * Idle connections (issue 17 §6): after 250 ms without traffic the master
 * parks a connection (no task, no buffers; the socket waits in an epoll set
 * of its own). Everything a live connection does must still work once it
 * was parked: input in either protocol, replies and closes from the
 * server, the client's close, an auth_token presented before.
 */
final class IdleConnectionTest extends TaskqTestCase
{
    /** Long enough for every connection to be parked (after 250-500 ms). */
    private const IDLE_US = 800000;

    private const TOKEN = 'idle-s3cret';

    /**
     * A server whose onReceive answers "got:<data>", or obeys
     * "send <fd> <text>", "close <fd>" and "exist <fd>" for another session.
     */
    private function commandServer(string $listen, array $settings = []): void
    {
        $set = var_export(['worker_num' => 1, 'task_worker_num' => 1] + $settings, true);
        $this->startServer(<<<PHP
\$server = new TaskServer($listen);
\$server->set($set + ['log_file' => "\$dir/taskq.log"]);
\$server->on('Connect', function (\$s, \$fd, \$rid) { record('connect', ['fd' => \$fd]); });
\$server->on('Receive', function (\$s, \$fd, \$rid, \$data) {
    record('receive', ['fd' => \$fd, 'data' => \$data]);
    \$w = explode(' ', \$data, 3);
    if (\$w[0] === 'send') {
        \$s->send(\$fd, 'sent:' . json_encode(\$s->send((int) \$w[1], \$w[2])));
    } elseif (\$w[0] === 'close') {
        \$s->send(\$fd, 'closed:' . json_encode(\$s->close((int) \$w[1])));
    } elseif (\$w[0] === 'exist') {
        \$s->send(\$fd, 'exist:' . json_encode(\$s->exist((int) \$w[1])));
    } else {
        \$s->send(\$fd, "got:\$data");
    }
});
\$server->on('Close', function (\$s, \$fd, \$rid) { record('close', ['fd' => \$fd]); });
\$server->on('Task', function (\$s, \$id, \$w, \$d) { record('task', ['data' => \$d]); });
\$server->start();
PHP, [], !str_contains($listen, 'TASKQ_SOCK_UNIX_STREAM'));
    }

    /** Opens a raw connection and waits for its onConnect; returns [socket, fd]. */
    private function rawConnect(string $address): array
    {
        $before = count($this->events('connect'));
        $sock = stream_socket_client($address, $errno, $errstr, 3);
        $this->assertNotFalse($sock, "connect: $errstr");
        stream_set_timeout($sock, 5);
        $connect = $this->waitEvents('connect', $before + 1, 10, $this->servers[0]);
        return [$sock, $connect[$before]['fd']];
    }

    /** Sends $data on a raw connection and reads the one reply (bounded). */
    private function ask($sock, string $data): string
    {
        fwrite($sock, $data);
        $reply = fread($sock, 65536);
        $this->assertNotFalse($reply);
        return $reply;
    }

    public function testParkedConnectionsReadReplyAndCloseAsLiveOnes(): void
    {
        $this->commandServer("'127.0.0.1', \$port");
        $tcp = "tcp://127.0.0.1:$this->port";
        [$talker, $talkerFd] = $this->rawConnect($tcp);
        [$silent, $silentFd] = $this->rawConnect($tcp);
        [$doomed, $doomedFd] = $this->rawConnect($tcp);
        [$leaver, $leaverFd] = $this->rawConnect($tcp);
        $this->assertSame('got:hello', $this->ask($talker, 'hello'));
        $this->assertSame('got:bye soon', $this->ask($leaver, 'bye soon'));
        $client = new TaskClient(TASKQ_SOCK_TCP);
        $this->assertTrue($client->connect('127.0.0.1', $this->port, 5));
        $first = $client->task('before');
        $this->assertIsInt($first);

        usleep(self::IDLE_US);
        // Input on a parked connection, raw and framed.
        $this->assertSame('got:again', $this->ask($talker, 'again'));
        $second = $client->task('after');
        $this->assertSame($first + 1, $second);
        $this->assertSame(6, $client->send('framed'));
        $this->assertSame('got:framed', $client->recv());

        usleep(self::IDLE_US);
        // A reply to, and a close of, connections that never sent anything.
        $this->assertSame('exist:true', $this->ask($talker, "exist $silentFd"));
        $this->assertSame('sent:true', $this->ask($talker, "send $silentFd hi there"));
        $this->assertSame('hi there', fread($silent, 100));
        $this->assertSame('closed:true', $this->ask($talker, "close $doomedFd"));
        $this->assertSame('', fread($doomed, 100));
        $this->assertTrue(feof($doomed), 'the server closed the parked connection');
        // The client's own close of a parked connection.
        fclose($leaver);
        $closed = array_column($this->waitEvents('close', 2, 10, $this->servers[0]), 'fd');
        sort($closed);
        $this->assertSame([$doomedFd, $leaverFd], $closed);
        $this->assertSame(['before', 'after'], array_column($this->waitEvents('task', 2, 10, $this->servers[0]), 'data'));
        $this->assertSame('exist:false', $this->ask($talker, "exist $doomedFd"));
        $this->assertNotContains($talkerFd, $closed);
        $client->close();
        fclose($talker);
        fclose($silent);
        fclose($doomed);
    }

    public function testAParkedUnixConnectionIsReadAgain(): void
    {
        $path = "$this->dir/idle.sock";
        $this->commandServer(var_export($path, true) . ', 0, TASKQ_PROCESS, TASKQ_SOCK_UNIX_STREAM');
        $this->waitUntil(fn () => self::unixListening($path), 10, 'the unix socket to listen', $this->servers[0]);
        [$sock] = $this->rawConnect("unix://$path");
        $this->assertSame('got:one', $this->ask($sock, 'one'));
        usleep(self::IDLE_US);
        $this->assertSame('got:two', $this->ask($sock, 'two'));
        fclose($sock);
        $this->waitEvents('close', 1, 10, $this->servers[0]);
    }

    public function testAParkedConnectionKeepsItsAuthentication(): void
    {
        $this->commandServer("'127.0.0.1', \$port", ['auth_token' => self::TOKEN, 'auth_timeout' => 0.5]);
        $client = new TaskClient(TASKQ_SOCK_TCP);
        $client->set(['auth_token' => self::TOKEN]);
        $this->assertTrue($client->connect('127.0.0.1', $this->port, 5));
        $this->assertIsInt($client->task('first'));
        // Idle past auth_timeout as well: the deadline was met, and parking
        // must not bring it back.
        usleep(self::IDLE_US);
        $this->assertIsInt($client->task('second'), "errCode {$client->errCode}: {$client->errMsg}");
        $this->assertSame(['first', 'second'], array_column($this->waitEvents('task', 2, 10, $this->servers[0]), 'data'));
        $this->assertSame([], $this->events('close'));
        $client->close();
    }
}
