<?php
/**
 * IDE stubs for the taskq extension: every class, method, property, constant
 * and function it declares, for PhpStorm, Psalm, PHPStan and friends.
 *
 * Never include or require this file: the extension declares all of it, and
 * loading it next to the extension is a fatal "Cannot redeclare" error.
 * Point your tools at it instead (see "IDE stubs" in README.md).
 *
 * Signatures are the extension's own, as Reflection reports them, so PHP's
 * named arguments use these parameter names: Swoole 5.1's for every method and
 * function Swoole has (named arguments written for Swoole work), taskq's own
 * for taskq-only methods and classes (TaskQ\Timer, TaskQ\Mailer). Optional parameters are nullable
 * with a default of null, as the extension declares them; null (or leaving
 * the argument out) means the default each doc line names. Return types that
 * the extension declares as `mixed` are given here as what the method really
 * returns. tests/StubTest.php fails when this file and the extension differ.
 *
 * Two groups of names exist only under INI settings (both on by default):
 * `TaskServer`/`TaskClient` with taskq.global_names=1, and the Swoole names
 * (`Swoole\Server`, `swoole_server`, `Swoole\Client`, `swoole_client`,
 * `Swoole\Timer`, the `SWOOLE_*` constants and `swoole_*` functions) with
 * taskq.swoole_compat=1 when the swoole extension is not loaded. The aliases
 * are the same classes as `TaskQ\Server` and `TaskQ\Client`; they are written
 * as empty subclasses here only so that every tool indexes them.
 */

namespace TaskQ {
    /**
     * Sets the name `top`/`ps -o comm` show (15 bytes, prctl) and, in the CLI,
     * the command line `ps` shows; true when the kernel took the name.
     */
    function set_process_name(string $name): bool {}

    /** Every error taskq throws; getCode() is the errno where there is one. */
    class Exception extends \RuntimeException {}

    /**
     * Why TaskQ\Mailer could not send: getCode() is the SMTP reply code (550, 451),
     * the errno of a network failure, or 0.
     */
    class MailException extends Exception
    {
        /** Whether retrying cannot help; behind isPermanent()/isTransient(). */
        private bool $permanent = true;

        /** Exception's constructor plus whether the failure is permanent. */
        public function __construct(string $message = '', int $code = 0, bool $permanent = true, ?\Throwable $previous = null) {}

        /** 5xx replies, invalid input, TLS and configuration problems: retrying cannot help. */
        public function isPermanent(): bool {}

        /** 4xx replies and network failures: a later attempt may succeed. */
        public function isTransient(): bool {}
    }

    /**
     * A task server (Swoole\Server's task-queue subset): binds in the
     * constructor, serves from start(). Always the process model.
     */
    class Server
    {
        /**
         * Every open session id, ascending, read from the master when read; empty outside a running server.
         * @readonly
         */
        public array $connections;

        /**
         * The port actually bound (the kernel's choice for port 0).
         * @readonly
         */
        public int $port;

        /**
         * The host, or the unix socket path, given to the constructor.
         * @readonly
         */
        public string $host;

        /**
         * Always TASKQ_PROCESS, even when the constructor was given SWOOLE_BASE (Swoole would run BASE).
         * @readonly
         */
        public int $mode;

        /**
         * The socket type given to the constructor.
         * @readonly
         */
        public int $type;

        /**
         * The options given to set(), merged; from start() on with the defaults Swoole fills in.
         * @readonly
         */
        public array $setting;

        /**
         * Pid of the master, in every process of the server (0 before start()).
         * @readonly
         */
        public int $master_pid;

        /**
         * Pid of the manager, in every process of the server (0 before start()).
         * @readonly
         */
        public int $manager_pid;

        /**
         * This worker's id; -1 outside workers.
         * @readonly
         */
        public int $worker_id;

        /**
         * This worker's pid.
         * @readonly
         */
        public int $worker_pid;

        /**
         * Whether this process is a task worker.
         * @readonly
         */
        public bool $taskworker;

        /**
         * Binds at once (throws TaskQ\Exception with the errno if it cannot). Defaults: port 0 (the kernel
         * picks), mode TASKQ_PROCESS, sock_type TASKQ_SOCK_TCP.
         */
        public function __construct(string $host, ?int $port = null, ?int $mode = null, ?int $sock_type = null) {}

        /** Merges options before start(); unknown keys warn with a suggestion, bad values throw TaskQ\Exception. */
        public function set(array $settings): bool {}

        /** Registers an event callback (case-insensitive, "on" prefix optional); unknown names warn and return false. */
        public function on(string $event_name, callable $callback): bool {}

        /** Forks the manager and workers and serves until stopped; then returns true. */
        public function start(): bool {}

        /**
         * Queues $data for a task worker (taskWorkerIndex null: any idle one); the task id, or false with a warning.
         */
        public function task(mixed $data, ?int $taskWorkerIndex = null, ?callable $finishCallback = null): int|false {}

        /** In onTask: sends $data to the dispatching worker's onFinish (or the task's finish callback). */
        public function finish(mixed $data): bool {}

        /** Sends $send_data to session $fd (one recv() for a TaskClient). No $serverSocket argument, unlike Swoole. */
        public function send(int $fd, string $send_data): bool {}

        /** Closes session $fd; its onClose follows. No $reset argument, unlike Swoole. */
        public function close(int $fd): bool {}

        /** Pid of the master process. */
        public function getMasterPid(): int {}

        /** Pid of the manager process. */
        public function getManagerPid(): int {}

        /** Id of this worker; -1 outside workers, where Swoole returns false. */
        public function getWorkerId(): int {}

        /** Pid of worker $worker_id (null: this worker); false when it has no process now. */
        public function getWorkerPid(?int $worker_id = null): int|false {}

        /** Status of worker $worker_id (null: this one): 1 busy, 2 idle, 3 exited; false when unknown. */
        public function getWorkerStatus(?int $worker_id = null): int|false {}

        /** Swoole's stats() keys plus task_queue_num, task_running_num, task_requeued_count, task_failed_count; false before start(). */
        public function stats(): array|false {}

        /**
         * taskq: failed tasks (attempts used up) the queue keeps, newest first: $limit (null: 100; 1 to 1000) from $offset (null: 0).
         * Rows: id, worker, task_id, attempts, error, failed_at, data (objects as __PHP_Incomplete_Class; raw and null data if undecodable).
         */
        public function failedTasks(?int $offset = null, ?int $limit = null): array {}

        /** taskq: puts failed tasks back into the queue (attempts reset); $ids: an id, an array of ids, or true for all. How many went back. */
        public function retryFailed(int|array|true $ids): int {}

        /** taskq: forgets failed tasks; $ids: an id, an array of ids, or true for all. How many were removed. */
        public function purgeFailed(int|array|true $ids): int {}

        /** Whether session $fd is connected (asks the master). */
        public function exists(int $fd): bool {}

        /** Ties session $fd to $uid once, for dispatch_mode 5. */
        public function bind(int $fd, int $uid): bool {}

        /** Alias of exists() (Swoole 4 name). */
        public function exist(int $fd): bool {}

        /**
         * Swoole's getClientInfo() keys plus worker_id and taskq_protocol; false for an unknown session.
         * $reactor_id and $ignoreError are accepted and ignored.
         */
        public function getClientInfo(int $fd, ?int $reactor_id = null, ?bool $ignoreError = null): array|false {}

        /**
         * Up to $find_count (null: 10; 1 to 100) open session ids above $start_fd (null: 0), ascending.
         */
        public function getClientList(?int $start_fd = null, ?int $find_count = null): array|false {}

        /**
         * Blocks for the task's result for at most $timeout seconds (null: 0.5); false on timeout, a late result
         * is discarded.
         */
        public function taskwait(mixed $data, ?float $timeout = null, ?int $taskWorkerIndex = null): mixed {}

        /**
         * Runs the tasks in parallel, waits at most $timeout seconds (null: 0.5); results under the input keys
         * (Swoole 4.8: by position), timed-out tasks absent.
         */
        public function taskWaitMulti(array $tasks, ?float $timeout = null): array|false {}

        /** Sends $message to worker $dst_worker_id's onPipeMessage. */
        public function sendMessage(mixed $message, int $dst_worker_id): bool {}

        /**
         * Restarts every worker (or only task workers) gracefully, as SIGUSR1/SIGUSR2 to the master; nothing queued
         * is lost.
         */
        public function reload(?bool $only_reload_taskworker = null): bool {}

        /** Stops the whole server, as SIGTERM to the master. */
        public function shutdown(): bool {}

        /**
         * Recycles this worker (null) or worker $workerId once it finishes its callback (Swoole sends SIGTERM);
         * $waitEvent is ignored.
         */
        public function stop(?int $workerId = null, ?bool $waitEvent = null): bool {}

        /** Calls $callback($timerId) every $ms ms in this worker; false outside one. Swoole 4.8 only (5.x removed it); no ...$params. */
        public function tick(int $ms, callable $callback): int|false {}

        /** Calls $callback() once after $ms ms in this worker; false outside one. Swoole 4.8 only (5.x removed it); no ...$params. */
        public function after(int $ms, callable $callback): int|false {}

        /** Cancels a tick() or after() timer; false when it does not exist. Swoole 4.8 only (5.x removed it), where it is $timer_id. */
        public function clearTimer(int $timerId): bool {}
    }

    /**
     * Swoole's synchronous client, plus task()/taskMulti() straight into a taskq server's queue.
     * Failures return false with errCode/errMsg and an E_WARNING.
     */
    class Client
    {
        /** errno or taskq code of the last failure (111 refused, 11 timeout, 5001 not connected, 9001 queue full...). */
        public int $errCode;

        /** Text of the last failure (Swoole's Client has no errMsg). */
        public string $errMsg;

        /**
         * The socket type given to the constructor.
         * @readonly
         */
        public int $type;

        /**
         * $type (null: TASKQ_SOCK_TCP) may be OR'ed with TASKQ_KEEP; $async must be false; $id is ignored
         * (the pool key is type, host and port). Swoole requires $type.
         */
        public function __construct(?int $type = null, ?bool $async = null, ?string $id = null) {}

        /** Framing, socket, auth_token and taskq_protocol options, applied at the next connect(). */
        public function set(array $settings): bool {}

        /**
         * Connects; $timeout (null: 0.5 s) also bounds every later send and recv. $sock_flag is ignored.
         */
        public function connect(string $host, ?int $port = null, ?float $timeout = null, ?int $sock_flag = null): bool {}

        /** taskq: queues $data straight into the server's task queue; the id once the server holds it, or false. Options: delay, priority, max_attempts, batch. */
        public function task(mixed $data, ?array $options = null): int|false {}

        /** taskq: task() for every element in batched round trips; ids (false where refused) under the input keys, false if the connection failed. */
        public function taskMulti(array $tasks, ?array $options = null): array|false {}

        /** taskq: progress of the tasks queued with ['batch' => $name]: total, done, failed, pending, started_at, finished_at, failures; false (errCode 9011) if unknown. */
        public function batch(string $name): array|false {}

        /** Sends a string, or an array as its JSON encoding (Swoole throws TypeError); bytes sent, or false. No $flag argument. */
        public function send(array|string $data): int|false {}

        /** One whole message (framed), or up to $size bytes (null: 65535) raw; "" when the server closed, false on error. */
        public function recv(?int $size = null, ?int $flag = null): string|false {}

        /** Closes; a TASKQ_KEEP connection goes back to the pool unless $force. */
        public function close(?bool $force = null): bool {}

        /** Whether connected and not closed by either side (checked without blocking). */
        public function isConnected(): bool {}
    }

    /** An SMTP client with a pool of open connections, reused across sends; thread-parallel sendMany(). */
    class Mailer
    {
        /**
         * smtp://user:pass@host:port (STARTTLS when offered; ?tls=required|none) or smtps://...; options: timeout,
         * connect_timeout, idle_timeout, pool_size, helo_name, ca_file, verify_peer. Connects at the first send.
         */
        public function __construct(string $dsn, ?array $options = null) {}

        /** Sends one message; the server's final reply ("250 OK ..."). Throws TaskQ\MailException. */
        public function send(array $message): string {}

        /** Sends a batch concurrently; under each input key ['ok', 'response', 'code', 'error', 'permanent']. Never throws for one message. */
        public function sendMany(array $messages): array {}
    }

    /** The worker's own timers for code with no server object at hand (Swoole\Timer without ...$params). */
    class Timer
    {
        /** Not instantiable: throws; every method is static. */
        public function __construct() {}

        /** Calls $callback($timerId) every $ms milliseconds in this worker; false outside a worker. */
        public static function tick(int $ms, callable $callback): int|false {}

        /** Calls $callback() once after $ms milliseconds in this worker; false outside a worker. */
        public static function after(int $ms, callable $callback): int|false {}

        /** Cancels a timer; false when it already fired or was cleared. Taskq's class: Swoole\Timer::clear() has $timer_id. */
        public static function clear(int $timerId): bool {}
    }
}

namespace {
    /** Server mode accepted for Swoole compatibility; taskq runs the process model either way. */
    const TASKQ_BASE = 1;
    /** Server mode: master, manager and worker processes (what taskq always runs). */
    const TASKQ_PROCESS = 2;
    /** Socket type: TCP over IPv4. */
    const TASKQ_SOCK_TCP = 1;
    /** Socket type: TCP over IPv6. */
    const TASKQ_SOCK_TCP6 = 3;
    /** Socket type: unix stream socket; the host is the socket's path. */
    const TASKQ_SOCK_UNIX_STREAM = 5;
    /** Client flag OR'ed into the socket type: a persistent connection kept per process. */
    const TASKQ_KEEP = 4096;
    /** task_ipc_mode 1 (Swoole's unix sockets); accepted, taskq has one IPC. */
    const TASKQ_IPC_UNSOCK = 1;
    /** task_ipc_mode 2 (Swoole's System V queue); accepted, taskq has one IPC. */
    const TASKQ_IPC_MSGQUEUE = 2;
    /** task_ipc_mode 3 (Swoole's preemptive queue); accepted, taskq has one IPC. */
    const TASKQ_IPC_PREEMPTIVE = 3;
    /** dispatch_mode 1: round robin. */
    const TASKQ_DISPATCH_ROUND = 1;
    /** dispatch_mode 2: by connection (the default). */
    const TASKQ_DISPATCH_FDMOD = 2;
    /** dispatch_mode 3: the least busy worker. */
    const TASKQ_DISPATCH_IDLE_WORKER = 3;
    /** dispatch_mode 4: by client IP. */
    const TASKQ_DISPATCH_IPMOD = 4;
    /** dispatch_mode 5: by the uid bound with bind(). */
    const TASKQ_DISPATCH_UIDMOD = 5;
    /** log_level 0: everything. */
    const TASKQ_LOG_DEBUG = 0;
    /** log_level 1. */
    const TASKQ_LOG_TRACE = 1;
    /** log_level 2: the default. */
    const TASKQ_LOG_INFO = 2;
    /** log_level 3. */
    const TASKQ_LOG_NOTICE = 3;
    /** log_level 4. */
    const TASKQ_LOG_WARNING = 4;
    /** log_level 5: errors only. */
    const TASKQ_LOG_ERROR = 5;
    /** log_level 6: nothing. */
    const TASKQ_LOG_NONE = 6;
    /** taskq's own version (not the Swoole API level, which is SWOOLE_VERSION). */
    const TASKQ_VERSION = '0.1.0';

    /** Swoole name of TASKQ_BASE (taskq.swoole_compat). */
    const SWOOLE_BASE = 1;
    /** Swoole name of TASKQ_PROCESS (taskq.swoole_compat). */
    const SWOOLE_PROCESS = 2;
    /** Swoole name of TASKQ_SOCK_TCP (taskq.swoole_compat). */
    const SWOOLE_SOCK_TCP = 1;
    /** Swoole name of TASKQ_SOCK_TCP6 (taskq.swoole_compat). */
    const SWOOLE_SOCK_TCP6 = 3;
    /** Swoole name of TASKQ_SOCK_UNIX_STREAM (taskq.swoole_compat). */
    const SWOOLE_SOCK_UNIX_STREAM = 5;
    /** Swoole's short name of SWOOLE_SOCK_TCP (taskq.swoole_compat). */
    const SWOOLE_TCP = 1;
    /** Swoole's short name of SWOOLE_SOCK_TCP6 (taskq.swoole_compat). */
    const SWOOLE_TCP6 = 3;
    /** Swoole's short name of SWOOLE_SOCK_UNIX_STREAM (taskq.swoole_compat). */
    const SWOOLE_UNIX_STREAM = 5;
    /** Swoole name of TASKQ_KEEP (taskq.swoole_compat). */
    const SWOOLE_KEEP = 4096;
    /** Swoole name of TASKQ_IPC_UNSOCK (taskq.swoole_compat). */
    const SWOOLE_IPC_UNSOCK = 1;
    /** Swoole name of TASKQ_IPC_MSGQUEUE (taskq.swoole_compat). */
    const SWOOLE_IPC_MSGQUEUE = 2;
    /** Swoole name of TASKQ_IPC_PREEMPTIVE (taskq.swoole_compat). */
    const SWOOLE_IPC_PREEMPTIVE = 3;
    /** Swoole name of TASKQ_DISPATCH_ROUND (taskq.swoole_compat). */
    const SWOOLE_DISPATCH_ROUND = 1;
    /** Swoole name of TASKQ_DISPATCH_FDMOD (taskq.swoole_compat). */
    const SWOOLE_DISPATCH_FDMOD = 2;
    /** Swoole name of TASKQ_DISPATCH_IDLE_WORKER (taskq.swoole_compat). */
    const SWOOLE_DISPATCH_IDLE_WORKER = 3;
    /** Swoole name of TASKQ_DISPATCH_IPMOD (taskq.swoole_compat). */
    const SWOOLE_DISPATCH_IPMOD = 4;
    /** Swoole name of TASKQ_DISPATCH_UIDMOD (taskq.swoole_compat). */
    const SWOOLE_DISPATCH_UIDMOD = 5;
    /** Swoole name of TASKQ_LOG_DEBUG (taskq.swoole_compat). */
    const SWOOLE_LOG_DEBUG = 0;
    /** Swoole name of TASKQ_LOG_TRACE (taskq.swoole_compat). */
    const SWOOLE_LOG_TRACE = 1;
    /** Swoole name of TASKQ_LOG_INFO (taskq.swoole_compat). */
    const SWOOLE_LOG_INFO = 2;
    /** Swoole name of TASKQ_LOG_NOTICE (taskq.swoole_compat). */
    const SWOOLE_LOG_NOTICE = 3;
    /** Swoole name of TASKQ_LOG_WARNING (taskq.swoole_compat). */
    const SWOOLE_LOG_WARNING = 4;
    /** Swoole name of TASKQ_LOG_ERROR (taskq.swoole_compat). */
    const SWOOLE_LOG_ERROR = 5;
    /** Swoole name of TASKQ_LOG_NONE (taskq.swoole_compat). */
    const SWOOLE_LOG_NONE = 6;
    /** Swoole's `$async` argument of the client constructor: synchronous, the only kind taskq has. */
    const SWOOLE_SOCK_SYNC = false;
    /** Swoole's `$async` argument for an asynchronous client; taskq's client refuses it. */
    const SWOOLE_SOCK_ASYNC = true;
    /** The Swoole release whose API taskq mirrors (taskq.swoole_compat). */
    const SWOOLE_VERSION = '4.8.13';
    /** SWOOLE_VERSION as major * 10000 + minor * 100 + release. */
    const SWOOLE_VERSION_ID = 40813;
    /** Major part of SWOOLE_VERSION. */
    const SWOOLE_MAJOR_VERSION = 4;
    /** Minor part of SWOOLE_VERSION. */
    const SWOOLE_MINOR_VERSION = 8;
    /** Release part of SWOOLE_VERSION. */
    const SWOOLE_RELEASE_VERSION = 13;

    /** The Swoole release whose API taskq mirrors, SWOOLE_VERSION (taskq.swoole_compat). */
    function swoole_version(): string {}

    /** Names this process for ps/top, as TaskQ\set_process_name() (taskq.swoole_compat). */
    function swoole_set_process_name(string $process_name): bool {}

    /** Calls $callback($timerId, ...$params) every $ms milliseconds in this worker; false outside a worker. */
    function swoole_timer_tick(int $ms, callable $callback, mixed ...$params): int|false {}

    /** Calls $callback(...$params) once after $ms milliseconds in this worker; false outside a worker. */
    function swoole_timer_after(int $ms, callable $callback, mixed ...$params): int|false {}

    /** Cancels a timer of this worker; false when it already fired or was cleared. */
    function swoole_timer_clear(int $timer_id): bool {}

    /** Global name of TaskQ\Server (taskq.global_names): the same class, not a subclass. */
    class TaskServer extends \TaskQ\Server {}

    /** Global name of TaskQ\Client (taskq.global_names): the same class, not a subclass. */
    class TaskClient extends \TaskQ\Client {}

    /** Swoole 4's snake-case name of TaskQ\Server (taskq.swoole_compat): the same class. */
    class swoole_server extends \TaskQ\Server {}

    /** Swoole 4's snake-case name of TaskQ\Client (taskq.swoole_compat): the same class. */
    class swoole_client extends \TaskQ\Client {}
}

namespace Swoole {
    /** Swoole's name of TaskQ\Server (taskq.swoole_compat): the same class, not a subclass. */
    class Server extends \TaskQ\Server {}

    /** Swoole's name of TaskQ\Client (taskq.swoole_compat): the same class, not a subclass. */
    class Client extends \TaskQ\Client {}

    /** Swoole's static timers on the worker's own timers, TaskQ\Timer (taskq.swoole_compat). */
    final class Timer
    {
        /** Calls $callback($timerId, ...$params) every $ms milliseconds in this worker; false outside a worker. */
        public static function tick(int $ms, callable $callback, mixed ...$params): int|false {}

        /** Calls $callback(...$params) once after $ms milliseconds in this worker; false outside a worker. */
        public static function after(int $ms, callable $callback, mixed ...$params): int|false {}

        /** Cancels a timer; false when it already fired or was cleared. */
        public static function clear(int $timer_id): bool {}
    }
}
