<?php
// Baseline for scenario 5: the latency of one hop between two PHP processes
// over a unix socket at the same rate (the runner writes 8-byte hrtime stamps
// into our stdin, a socketpair). Prints the latencies (ns) as JSON at EOF.

$buf = '';
$lat = [];
echo "ready\n";
while (($chunk = fread(STDIN, 65536)) !== false && $chunk !== '') {
    $now = hrtime(true);
    $buf .= $chunk;
    $whole = intdiv(strlen($buf), 8) * 8;
    foreach (unpack('J*', substr($buf, 0, $whole)) as $sent) {
        $lat[] = $now - $sent;
    }
    $buf = substr($buf, $whole);
}
echo json_encode($lat), "\n";
