<?php
// Swoole's functions and Swoole\Timer, declared at request start when the
// Swoole names are on (taskq.swoole_compat=1 and no swoole extension). They
// are thin PHP wrappers, so a TypeError names the function the script called.
namespace {
    if (!\function_exists('swoole_version')) {
        /** The Swoole release whose API taskq mirrors (SWOOLE_VERSION). */
        function swoole_version(): string
        {
            return \SWOOLE_VERSION;
        }

        /** Names this process for ps/top: see TaskQ\set_process_name(). */
        function swoole_set_process_name(string $process_name): bool
        {
            return \TaskQ\set_process_name($process_name);
        }

        /** A repeating timer of this worker: see Swoole\Timer::tick(). */
        function swoole_timer_tick(int $ms, callable $callback, mixed ...$params): int|false
        {
            return \Swoole\Timer::tick($ms, $callback, ...$params);
        }

        /** A one-shot timer of this worker: see Swoole\Timer::after(). */
        function swoole_timer_after(int $ms, callable $callback, mixed ...$params): int|false
        {
            return \Swoole\Timer::after($ms, $callback, ...$params);
        }

        /** Cancels a timer of this worker. */
        function swoole_timer_clear(int $timer_id): bool
        {
            return \TaskQ\Timer::clear($timer_id);
        }
    }
}

namespace Swoole {
    if (!\class_exists(Timer::class, false)) {
        /** Swoole's static timers on taskq's per-worker timers (TaskQ\Timer). */
        final class Timer
        {
            /** Calls $callback($timerId, ...$params) every $ms milliseconds. */
            public static function tick(int $ms, callable $callback, mixed ...$params): int|false
            {
                return \TaskQ\Timer::tick($ms, $params ? static fn (int $id) => $callback($id, ...$params) : $callback);
            }

            /** Calls $callback(...$params) once after $ms milliseconds. */
            public static function after(int $ms, callable $callback, mixed ...$params): int|false
            {
                return \TaskQ\Timer::after($ms, $params ? static fn () => $callback(...$params) : $callback);
            }

            /** Cancels a timer; false when it already fired or was cleared. */
            public static function clear(int $timer_id): bool
            {
                return \TaskQ\Timer::clear($timer_id);
            }
        }
    }
}
