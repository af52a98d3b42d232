<?php
namespace TaskQ;

if (!\class_exists(Exception::class, false)) {
    /** Every error taskq reports by exception; `getCode()` is the errno where there is one. */
    class Exception extends \RuntimeException {}
}

if (!\class_exists(MailException::class, false)) {
    /**
     * Why TaskQ\Mailer could not send. getCode() is the SMTP reply code
     * (550, 451, ...), the errno for network failures (111 refused), or 0.
     * A retry policy retries only when isTransient().
     */
    class MailException extends Exception
    {
        public function __construct(string $message = '', int $code = 0, private bool $permanent = true, ?\Throwable $previous = null)
        {
            parent::__construct($message, $code, $previous);
        }

        /** 5xx replies, invalid input, TLS and configuration problems: retrying cannot help. */
        public function isPermanent(): bool
        {
            return $this->permanent;
        }

        /** 4xx replies and network failures: a later attempt may succeed. */
        public function isTransient(): bool
        {
            return !$this->permanent;
        }
    }
}
