<?php
// Where the time goes in the pipelined scenario (3): starts the bench server,
// sends N tasks on one connection (like scenario 3) while perf watches, and
// prints
//   - per process: CPU time, syscalls and context switches per task
//     (perf stat, software events and the raw_syscalls tracepoint: this
//     machine kind has no hardware counters);
//   - the master's hottest functions, self and with callees (perf record
//     -e cpu-clock --call-graph dwarf; taskq.so keeps its symbols);
//   - the same for the event worker and one task worker.
// Run through bench/profile.sh (which kills whatever it started on exit).
//   BENCH_PROFILE_TASKS (default 200000), BENCH_PROFILE_OUT (perf data dir)

require __DIR__ . '/lib.php';

Bench::init();
$tasks = (int) (getenv('BENCH_PROFILE_TASKS') ?: 200000);
$out = getenv('BENCH_PROFILE_OUT') ?: Bench::$dir . '/perf';
@mkdir($out, 0700, true);
if (!is_executable('/usr/bin/perf')) {
    fwrite(STDERR, "perf not found (Debian package linux-perf)\n");
    exit(1);
}

$srv = new TaskqServer('prof');
$roles = ['master' => [$srv->pid], 'worker' => [$srv->shm->slot(0)['pid']], 'task_workers' => []];
foreach (range(1, TASK_WORKERS) as $w) {
    $roles['task_workers'][] = $srv->shm->slot($w)['pid'];
}
$all = Bench::tree($srv->pid);
$roles['manager'] = array_values(array_diff($all, $roles['master'], $roles['worker'], $roles['task_workers']));
$tids = fn (array $pids) => array_merge(...array_map(fn ($p) => array_map('intval', array_map('basename', glob("/proc/$p/task/*"))), $pids));

$pidOf = [];
foreach ($all as $p) {
    foreach ($tids([$p]) as $t) {
        $pidOf[$t] = $p;
    }
}
$payloads = array_map(fn ($i) => Bench::payload($i), range(0, 999));
$c = $srv->client();
// Warm up (first onTask compiles nothing, but the allocators and caches settle).
for ($i = 0; $i < 5000; $i++) {
    $c->send($payloads[$i % 1000]);
}
$srv->waitCount([0], 5000, 60);

$perf = fn (array $args, string $log) => Bench::spawn(array_merge(['perf'], $args), [], "$out/$log");
/** Sends $tasks on the connection while the perf processes $watchers run; returns seconds to the last onFinish. */
$pass = function (array $watchers) use ($srv, $c, $tasks, $payloads): float {
    usleep(500000);
    $base = $srv->counted([0]);
    $t0 = hrtime(true);
    for ($i = 0; $i < $tasks; $i++) {
        $c->send($payloads[$i % 1000]);
    }
    [$last] = $srv->waitCount([0], $base + $tasks, 300);
    foreach ($watchers as $p) {
        posix_kill($p['pid'], SIGINT);
    }
    foreach ($watchers as $p) {
        Bench::waitFor(fn () => !proc_get_status($p['proc'])['running'], 60, 'perf to finish', 20000);
        proc_close($p['proc']);
        unset(Bench::$children[$p['pid']]);
    }
    return ($last - $t0) / 1e9;
};
// Pass 1: counting only (cheap), for per-task CPU, syscalls and switches.
$stat = $perf(['stat', '-x', ',', '-o', "$out/stat.csv", '--per-thread', '-e', 'task-clock,context-switches,raw_syscalls:sys_enter',
    '-t', implode(',', $tids($all))], 'stat.log');
$seconds = $pass([$stat]);
// Pass 2: sampling with call stacks (slows the run down).
$recMaster = $perf(['record', '-q', '-e', 'cpu-clock', '-F', '1999', '--call-graph', 'dwarf,16384', '-o', "$out/master.data", '-p', (string) $srv->pid], 'rec-master.log');
$recAll = $perf(['record', '-q', '-e', 'cpu-clock', '-F', '999', '-g', '-o', "$out/all.data", '-p', implode(',', $all)], 'rec-all.log');
$seconds2 = $pass([$recMaster, $recAll]);
$c->close();
$srv->stop();

printf("pipelined: %d tasks in %.2f s = %.0f tasks/s under perf stat; %.0f tasks/s under perf record\n\n",
    $tasks, $seconds, $tasks / $seconds, $tasks / $seconds2);

// Per process role: CPU and syscalls per task.
$byTid = [];
foreach (file("$out/stat.csv") as $line) {
    $f = str_getcsv(trim($line));
    if (count($f) < 4 || !preg_match('/-(\d+)$/', $f[0], $m)) {
        continue;
    }
    $byTid[(int) $m[1]][$f[3]] = (float) $f[1];
}
echo "per process role, per task (perf stat over the run):\n";
printf("| %-16s | %12s | %12s | %12s |\n", 'role', 'CPU µs', 'syscalls', 'ctx switches');
echo "|---|---:|---:|---:|\n";
$totCpu = 0;
foreach ($roles as $role => $pids) {
    $cpu = $sys = $cs = 0;
    foreach ($byTid as $tid => $ev) {
        if (in_array($pidOf[$tid] ?? -1, $pids, true)) {
            $cpu += $ev['task-clock'] ?? 0;
            $sys += $ev['raw_syscalls:sys_enter'] ?? 0;
            $cs += $ev['context-switches'] ?? 0;
        }
    }
    $totCpu += $cpu;
    printf("| %-16s | %12.2f | %12.2f | %12.2f |\n", $role, $cpu * 1e3 / $tasks, $sys / $tasks, $cs / $tasks);
}
printf("| %-16s | %12.2f | | |\n\n", 'all', $totCpu * 1e3 / $tasks);

$report = function (string $data, array $args, int $lines) {
    $cmd = 'perf report -i ' . escapeshellarg($data) . ' --stdio --no-header ' . implode(' ', $args) . ' 2>/dev/null';
    $text = shell_exec($cmd) ?? '';
    $keep = array_values(array_filter(explode("\n", $text), fn ($l) => $l !== '' && $l[0] !== '#'));
    echo implode("\n", array_slice($keep, 0, $lines)), "\n\n";
};
/**
 * Aggregates `perf script` call stacks of $pids: where the samples are (the
 * syscall they are in, or user space by library), and the innermost taskq
 * function on the stack (what in taskq caused the cost, callees included).
 */
$aggregate = function (string $data, array $pids, bool $withTaskq) use ($tasks) {
    $fh = popen('perf script -i ' . escapeshellarg($data) . ' -F pid,ip,sym,dso 2>/dev/null', 'r');
    $where = $taskq = $pair = [];
    $total = 0;
    $flush = function (?int $pid, array $frames) use (&$where, &$taskq, &$pair, &$total, $pids) {
        if ($pid === null || !$frames || !in_array($pid, $pids, true)) {
            return;
        }
        $total++;
        $cat = null;
        foreach ($frames as [$sym, $dso]) {
            if (preg_match('/^__(?:x64|do)_sys_(\w+)/', $sym, $m)) {
                $cat = "kernel: $m[1]()";
                break;
            }
        }
        if ($cat === null) {
            $cat = str_contains($frames[0][1], 'kernel') ? 'kernel: no syscall (irq, page fault, scheduler)'
                : 'user: ' . basename($frames[0][1]);
        }
        $where[$cat] = ($where[$cat] ?? 0) + 1;
        $fn = 'no taskq frame';
        foreach ($frames as [$sym]) {
            if (str_starts_with($sym, 'taskq::') || str_starts_with($sym, '<taskq::')) {
                $fn = preg_replace('/::\{\{closure\}\}.*$|\+0x[0-9a-f]+$/', '', $sym);
                break;
            }
        }
        $taskq[$fn] = ($taskq[$fn] ?? 0) + 1;
        $k = "$cat  <-  $fn";
        $pair[$k] = ($pair[$k] ?? 0) + 1;
    };
    $pid = null;
    $frames = [];
    while (($line = fgets($fh)) !== false) {
        $line = rtrim($line);
        if ($line === '') {
            $flush($pid, $frames);
            $pid = null;
            $frames = [];
        } elseif ($pid === null && preg_match('/^\s*(\d+)\s*$/', $line, $m)) {
            $pid = (int) $m[1];
        } elseif (preg_match('/^\s+[0-9a-f]+\s+(.*?)(?:\+0x[0-9a-f]+)?\s+\((.*)\)$/', $line, $m)) {
            $frames[] = [$m[1], $m[2]];
        }
    }
    $flush($pid, $frames);
    pclose($fh);
    $show = function (string $title, array $counts, int $top) use ($total) {
        arsort($counts);
        echo "$title\n";
        foreach (array_slice($counts, 0, $top, true) as $k => $v) {
            printf("  %5.1f%%  %s\n", 100 * $v / max(1, $total), $k);
        }
        echo "\n";
    };
    printf("(%d samples)\n", $total);
    $show('  where (syscall entered, else user space by library):', $where, 12);
    if ($withTaskq) {
        $show('  innermost taskq function on the stack (inclusive):', $taskq, 15);
        $show('  top (where, taskq function) pairs:', $pair, 15);
    }
};

echo "== master, call stacks (dwarf) ==\n";
$aggregate("$out/master.data", $roles['master'], true);
echo "== event worker (kernel stacks only: PHP and taskq.so have no frame pointers) ==\n";
$aggregate("$out/all.data", $roles['worker'], false);
echo "== task workers ==\n";
$aggregate("$out/all.data", $roles['task_workers'], false);

echo "CPU by process and library (all server processes, cpu-clock samples):\n";
$report("$out/all.data", ['--sort', 'pid,dso', '-g', 'none', '--percent-limit', '1'], 30);
echo "master: hottest functions, self time:\n";
$report("$out/master.data", ['--no-children', '--sort', 'dso,sym', '-g', 'none', '--percent-limit', '0.7'], 45);
echo "master: inclusive time (with callees), taskq functions:\n";
$report("$out/master.data", ['--children', '--sort', 'sym', '-g', 'none', '--percent-limit', '2', '--dsos', 'taskq.so'], 45);
echo "event worker + task workers: hottest functions, self time:\n";
$workerPids = implode(',', array_merge($roles['worker'], $roles['task_workers']));
$report("$out/all.data", ['--no-children', '--pid', $workerPids, '--sort', 'dso,sym', '-g', 'none', '--percent-limit', '1'], 35);
echo "perf data: $out (BENCH_KEEP=1 keeps it)\n";
