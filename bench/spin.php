<?php
// The CPU-bound task of bench scenario 10: the same function runs in the
// task workers (BENCH_TASK_SPIN) and, alone, in the runner, which times it
// to know what one task costs in CPU.

/** Burns CPU for $rounds rounds of integer hashing; returns the hash so nothing is optimised away. */
function bench_spin(int $rounds): int
{
    $h = 0;
    for ($i = 0; $i < $rounds; $i++) {
        $h = ($h * 31 + $i) & 0xFFFFFFF;
    }
    return $h;
}
