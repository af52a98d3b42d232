<?php
// The seed's Server.php with sendEmail() done: every task worker sends its
// queued emails through TaskQ\Mailer, over SMTP connections it keeps open.
//
//   TASKQ_SMTP_DSN='smtp://user:pass@smtp.example.com:587?tls=required' \
//     php -d extension=modules/taskq.so php/examples/mail_server.php
//
// Queue mail with php/examples/mail_client.php. Ctrl-C stops the server.

class Server
{
    private $server;
    private $mailer;

    public function __construct()
    {
        $host = getenv('TASKQ_HOST') ?: '127.0.0.1';
        $port = (int) (getenv('TASKQ_PORT') ?: 9501);
        $this->server = new swoole_server($host, $port);
        $this->server->set([
            'worker_num' => 1,
            'daemonize' => 0, // the seed daemonizes; in the foreground Ctrl-C stops it
            'max_request' => 10000,
            'dispatch_mode' => 2,
            'task_worker_num' => 8,
            // sendEmail() retries what may pass later itself; what it
            // throws will not pass on another run.
            'task_max_attempts' => 1,
        ]);
        $this->server->on('Start', function () use ($host, $port) {
            echo "mail server on $host:$port, sending to ", self::dsnForLog(), "\n";
        });
        $this->server->on('Receive', [$this, 'onReceive']);
        $this->server->on('Task', [$this, 'onTask']);
        $this->server->on('Finish', [$this, 'onFinish']);
        $this->server->start();
    }

    public function onReceive(swoole_server $server, $fd, $from_id, $data)
    {
        $server->task($data);
    }

    // A message from onReceive is the JSON the seed's client sent; a task
    // from TaskClient::taskMulti() arrives as the array it queued.
    public function onTask($server, $task_id, $from_id, $data)
    {
        return $this->sendEmail(is_string($data) ? json_decode($data, true) : $data);
    }

    // Swoole wants onFinish when workers call task(); a sent email's
    // result (true) needs nothing here.
    public function onFinish($serv, $task_id, $data)
    {
    }

    // Throws what still failed after the retries: the task is given up
    // with that error (onTaskFailed, the failed list, the batch's failures).
    protected function sendEmail($data)
    {
        // Created on first use, so inside the task worker: each worker has
        // its own connections, none inherited through fork().
        $this->mailer ??= new TaskQ\Mailer(getenv('TASKQ_SMTP_DSN') ?: 'smtp://127.0.0.1:25');
        for ($attempt = 1; ; $attempt++) {
            try {
                $this->mailer->send($data);
                return true;
            } catch (TaskQ\MailException $e) {
                // 4xx and network failures may pass later; 5xx and bad input never will.
                if ($e->isPermanent() || $attempt === 3) {
                    throw $e;
                }
                usleep(200000 * $attempt);
            }
        }
    }

    private static function dsnForLog(): string
    {
        $dsn = getenv('TASKQ_SMTP_DSN') ?: 'smtp://127.0.0.1:25';
        return preg_replace('#^(\w+://[^:/@]+):[^@]*@#', '$1:***@', $dsn);
    }
}

$server = new Server();
