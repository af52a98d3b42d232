<?php
namespace TaskQ;

if (!\class_exists(Exception::class, false)) {
    /** Every error taskq reports by exception; `getCode()` is the errno where there is one. */
    class Exception extends \RuntimeException {}
}
