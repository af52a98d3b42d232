<?php
// The floor for the seed pattern: a taskq-free server that only accepts and
// reads (and throws the bytes away), on TCP 127.0.0.1 and on a unix socket.
// Used by bench/run.php as the baseline for "connect, send one message,
// close" and for pipelined writes.
//
// One process: stream_select() on the two listening sockets only; each
// accepted connection is read to EOF at once (the bench's clients write and
// close right away), so at most three descriptors are open and select()'s
// FD_SETSIZE limit of 1024 never applies, however fast connections come.
//
//   php bench/sink.php <port-file> <unix-path>
// Writes the chosen TCP port to <port-file> once both sockets listen.

[$_, $portFile, $unixPath] = $argv;
@unlink($unixPath);
$ctx = stream_context_create(['socket' => ['backlog' => 4096]]);
$tcp = stream_socket_server('tcp://127.0.0.1:0', $errno, $errstr, STREAM_SERVER_BIND | STREAM_SERVER_LISTEN, $ctx);
$unix = stream_socket_server("unix://$unixPath", $errno, $errstr, STREAM_SERVER_BIND | STREAM_SERVER_LISTEN, $ctx);
if (!$tcp || !$unix) {
    fwrite(STDERR, "sink: cannot listen: $errstr\n");
    exit(1);
}
stream_set_blocking($tcp, false);
stream_set_blocking($unix, false);
$name = stream_socket_get_name($tcp, false);
file_put_contents("$portFile.tmp", substr($name, strrpos($name, ':') + 1));
rename("$portFile.tmp", $portFile);

for (;;) {
    $read = [$tcp, $unix];
    $w = $e = null;
    if (@stream_select($read, $w, $e, null) === false) {
        continue;
    }
    foreach ($read as $listener) {
        // Everything pending: the listeners are non-blocking.
        while ($c = @stream_socket_accept($listener, 0)) {
            stream_set_blocking($c, true);
            stream_set_timeout($c, 10);
            while (($data = fread($c, 1 << 16)) !== false && $data !== '') {
            }
            fclose($c);
        }
    }
}
