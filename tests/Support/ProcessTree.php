<?php
namespace TaskQ\Tests\Support;

/**
 * Finds and kills every process started for one test, however it detached
 * (daemonize calls setsid and re-parents to init), by a tag placed in the
 * environment that every forked child inherits.
 */
final class ProcessTree
{
    /** Pids of live processes whose environment contains TASKQ_TEST_TAG=$tag. */
    public static function pids(string $tag): array
    {
        $needle = "TASKQ_TEST_TAG=$tag\0";
        $pids = [];
        foreach (glob('/proc/[0-9]*', GLOB_ONLYDIR) ?: [] as $dir) {
            $env = @file_get_contents("$dir/environ");
            if ($env === false || !str_contains($env . "\0", $needle)) {
                continue;
            }
            $stat = @file_get_contents("$dir/stat");
            // A zombie waiting to be reaped is not a running process.
            if ($stat !== false && preg_match('/\) Z /', $stat)) {
                continue;
            }
            $pids[] = (int) basename($dir);
        }
        sort($pids);
        return $pids;
    }

    /** Tagged zombies whose parent is a live tagged process: children their parent does not reap. */
    public static function unreaped(string $tag): array
    {
        $live = self::pids($tag);
        $out = [];
        foreach (glob('/proc/[0-9]*', GLOB_ONLYDIR) ?: [] as $dir) {
            $stat = @file_get_contents("$dir/stat");
            $env = @file_get_contents("$dir/environ");
            if ($stat === false || $env === false || !str_contains($env . "\0", "TASKQ_TEST_TAG=$tag\0")) {
                continue;
            }
            $fields = explode(' ', substr($stat, strrpos($stat, ')') + 2));
            if ($fields[0] === 'Z' && in_array((int) $fields[1], $live, true)) {
                $out[] = (int) basename($dir);
            }
        }
        return $out;
    }

    /** SIGKILLs every tagged process and waits (bounded) until none is left. */
    public static function killAll(string $tag, float $timeout = 5.0): array
    {
        $deadline = microtime(true) + $timeout;
        do {
            $pids = self::pids($tag);
            foreach ($pids as $pid) {
                @posix_kill($pid, SIGKILL);
            }
            if (!$pids) {
                return [];
            }
            usleep(20000);
        } while (microtime(true) < $deadline);
        return self::pids($tag);
    }
}
