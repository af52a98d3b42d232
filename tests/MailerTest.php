<?php
use TaskQ\Mailer;
use TaskQ\MailException;
use TaskQ\Tests\Support\SmtpSink;
use TaskQ\Tests\Support\TaskqTestCase;

/**
 * TaskQ\Mailer against a real SMTP server (aiosmtpd, tests/Support/smtp_sink.py)
 * on 127.0.0.1: what arrives, how failures are reported, TLS, AUTH, pooling,
 * and the seed's 10,000 emails through a task server.
 */
final class MailerTest extends TaskqTestCase
{
    private const EXAMPLES = __DIR__ . '/../php/examples';
    use SmtpSink;

    protected function tearDown(): void
    {
        $this->stopSinks();
        parent::tearDown();
    }

    // ---- what arrives ---------------------------------------------------

    /** @dataProvider withAndWithoutPipelining */
    public function testDeliversRecipientsHeadersAndBody(bool $pipelining): void
    {
        $port = $this->startSink(self::pipelining($pipelining));
        $reply = $this->mailer($port)->send([
            'from' => 'Shop <shop@example.com>',
            'to' => ['a@example.com', 'Bee <b@example.com>'],
            'cc' => 'c@example.com',
            'bcc' => ['hidden@example.com'],
            'reply_to' => 'help@example.com',
            'subject' => 'Your order',
            'text' => "Thanks!\n.A line starting with a dot\nBye",
            'headers' => ['X-Campaign' => 'spring', 'X-Seq' => 7],
        ]);
        $this->assertSame('250 OK queued as 1', $reply);

        [$msg] = $this->messages($port);
        $this->assertSame('shop@example.com', $msg['mail_from']);
        $this->assertSame(['a@example.com', 'b@example.com', 'c@example.com', 'hidden@example.com'], $msg['rcpt_tos']);
        [$h, $body] = self::split($msg['raw']);
        $this->assertSame(['Shop <shop@example.com>'], $h['from']);
        $this->assertSame(['a@example.com, Bee <b@example.com>'], $h['to']);
        $this->assertSame(['c@example.com'], $h['cc']);
        $this->assertSame(['help@example.com'], $h['reply-to']);
        $this->assertSame(['Your order'], $h['subject']);
        $this->assertSame(['spring'], $h['x-campaign']);
        $this->assertSame(['7'], $h['x-seq']);
        $this->assertArrayNotHasKey('bcc', $h, 'Bcc recipients are not shown');
        $this->assertMatchesRegularExpression('/^<[^@>]+@[^>]+>$/', $h['message-id'][0]);
        $this->assertNotFalse(strtotime($h['date'][0]));
        $this->assertStringStartsWith('text/plain; charset=utf-8', $h['content-type'][0]);
        $this->assertSame("Thanks!\r\n.A line starting with a dot\r\nBye", rtrim(self::decode($h, $body), "\r\n"));
        // Four recipients: with PIPELINING all RCPTs follow MAIL FROM in one
        // write, and DATA waits for their replies.
        $rcpts = implode('', array_map(fn ($r) => "RCPT TO:<$r>\r\n", $msg['rcpt_tos']));
        $this->assertSame($pipelining ? $rcpts : '', $msg['batched']);
    }

    public function testPipeliningSendsMailRcptAndDataInOneWrite(): void
    {
        $port = $this->startSink(['--pipelining']);
        $mailer = $this->mailer($port);
        for ($i = 0; $i < 3; $i++) {
            $this->assertSame('250 OK queued as ' . ($i + 1), $mailer->send(self::simple("u$i@example.com")));
        }
        $this->assertSame(
            ["RCPT TO:<u0@example.com>\r\nDATA\r\n", "RCPT TO:<u1@example.com>\r\nDATA\r\n", "RCPT TO:<u2@example.com>\r\nDATA\r\n"],
            array_column($this->messages($port), 'batched'),
        );
        $this->assertSame(1, $this->connections($port));
    }

    public function testUtf8SubjectIsEncodedPerRfc2047(): void
    {
        $port = $this->startSink();
        $subject = 'Grüße aus Köln ✓ 日本語の件名がとても長い場合でも正しく折り返されること';
        $this->mailer($port)->send([
            'from' => 'Jörg Müller <joerg@example.com>',
            'to' => 'a@example.com',
            'subject' => $subject,
            'text' => 'Ünïcödé body',
        ]);
        [$msg] = $this->messages($port);
        [$head] = explode("\r\n\r\n", $msg['raw'], 2);
        $this->assertTrue(mb_check_encoding($head, 'ASCII'), "headers are 7-bit:\n$head");
        [$h, $body] = self::split($msg['raw']);
        $this->assertMatchesRegularExpression('/^=\?utf-8\?[bq]\?/i', $h['subject'][0]);
        $this->assertSame($subject, iconv_mime_decode($h['subject'][0], 0, 'UTF-8'));
        $this->assertSame('Jörg Müller <joerg@example.com>', iconv_mime_decode($h['from'][0], 0, 'UTF-8'));
        $this->assertSame('Ünïcödé body', rtrim(self::decode($h, $body), "\r\n"));
    }

    public function testHtmlAlternativeAndAttachments(): void
    {
        $port = $this->startSink();
        $binary = random_bytes(3000) . "\0\r\n.\r\nend";
        file_put_contents("$this->dir/invoice.pdf", $binary);
        $this->mailer($port)->send([
            'from' => 'shop@example.com',
            'to' => 'a@example.com',
            'subject' => 'Invoice',
            'text' => 'See the invoice.',
            'html' => "<p>See the <b>invoice</b>.</p>\r",
            'attachments' => [
                "$this->dir/invoice.pdf",
                ['data' => "a,b\n1,2\n", 'name' => 'report.csv'],
                ['data' => '{"x":1}', 'name' => 'data.bin', 'type' => 'application/json'],
            ],
        ]);
        [$msg] = $this->messages($port);
        $this->assertSame(0, preg_match("/\r(?!\n)|(?<!\r)\n/", $msg['raw']), 'no bare CR or LF on the wire');
        [$h] = self::split($msg['raw']);
        $this->assertStringStartsWith('multipart/mixed', $h['content-type'][0]);
        $parts = self::parts($msg['raw']);
        $types = array_map(fn ($p) => strtok($p[0]['content-type'][0], ';'), $parts);
        $this->assertSame(['text/plain', 'text/html', 'application/pdf', 'text/csv', 'application/json'], $types);
        $this->assertStringContainsString('multipart/alternative', $msg['raw']);
        $this->assertSame('See the invoice.', rtrim(self::decode(...$parts[0]), "\r\n"));
        $this->assertSame('<p>See the <b>invoice</b>.</p>', rtrim(self::decode(...$parts[1]), "\r\n"));
        $this->assertStringContainsString('filename="invoice.pdf"', $parts[2][0]['content-disposition'][0]);
        $this->assertSame($binary, self::decode(...$parts[2]));
        $this->assertStringContainsString('filename="report.csv"', $parts[3][0]['content-disposition'][0]);
        $this->assertSame("a,b\n1,2\n", self::decode(...$parts[3]), 'attachments arrive byte for byte');
        $this->assertSame('{"x":1}', self::decode(...$parts[4]));
    }

    public function testTheSeedsMessageKeys(): void
    {
        $port = $this->startSink();
        $this->mailer($port)->send([
            'from_email' => 'shop@example.com',
            'to_email' => 'customer@example.com',
            'title' => 'Order #1',
            'content' => 'Thank you.',
        ]);
        [$msg] = $this->messages($port);
        [$h, $body] = self::split($msg['raw']);
        $this->assertSame(['customer@example.com'], $msg['rcpt_tos']);
        $this->assertSame(['Order #1'], $h['subject']);
        $this->assertSame('Thank you.', rtrim(self::decode($h, $body), "\r\n"));
    }

    public function testInternationalizedAddressesUseSmtpUtf8(): void
    {
        $port = $this->startSink();
        $this->mailer($port)->send(['from' => 'shop@example.com', 'to' => 'José <josé@exämple.com>', 'subject' => 'Olá', 'text' => 'Olá']);
        [$msg] = $this->messages($port);
        $this->assertSame(['josé@exämple.com'], $msg['rcpt_tos']);
        $this->assertContains('SMTPUTF8', $msg['mail_options']);

        $old = $this->startSink(['--no-smtputf8']);
        $e = $this->sendFails($this->mailer($old), self::simple('josé@example.com'));
        $this->assertSame("SMTP server 127.0.0.1:$old does not support SMTPUTF8 (needed for internationalized addresses)", $e->getMessage());
        $this->assertTrue($e->isPermanent());
        $this->assertSame([], $this->messages($old));
    }

    public function testConnectionsArePooledAndReused(): void
    {
        $port = $this->startSink();
        $mailer = $this->mailer($port, ['pool_size' => 4]);
        for ($i = 0; $i < 20; $i++) {
            $mailer->send(self::simple("u$i@example.com"));
        }
        $this->assertSame(1, $this->connections($port), 'sequential sends share one connection');
        $results = $mailer->sendMany(array_map(fn ($i) => self::simple("m$i@example.com"), range(1, 40)));
        $this->assertCount(40, array_filter(array_column($results, 'ok')));
        $this->assertLessThanOrEqual(4, $this->connections($port), 'sendMany uses at most pool_size connections');
        $this->assertCount(60, $this->messages($port));
    }

    // ---- failures -------------------------------------------------------

    public function testConnectionRefusedIsTransient(): void
    {
        $e = $this->sendFails($this->mailer(self::freePort()), self::simple('a@example.com'));
        $this->assertSame(111, $e->getCode());
        $this->assertTrue($e->isTransient());
        $this->assertFalse($e->isPermanent());
        $this->assertStringContainsString('cannot connect to SMTP server 127.0.0.1:', $e->getMessage());
        $this->assertStringContainsString('Connection refused', $e->getMessage());
        $this->assertInstanceOf(TaskQ\Exception::class, $e);
        $this->assertSame(__FILE__, $e->getFile());
    }

    /** @dataProvider withAndWithoutPipelining */
    public function testRejectedRecipientIsPermanentAndTheConnectionStaysUsable(bool $pipelining): void
    {
        $port = $this->startSink(self::pipelining($pipelining));
        $mailer = $this->mailer($port);
        $e = $this->sendFails($mailer, self::simple('reject@example.com'));
        $this->assertSame(550, $e->getCode());
        $this->assertTrue($e->isPermanent());
        $this->assertFalse($e->isTransient());
        $this->assertStringContainsString('rejected RCPT TO:<reject@example.com>: 550 5.1.1 <reject@example.com>: recipient rejected', $e->getMessage());
        $mailer->send(self::simple('fine@example.com'));
        $this->assertSame(['fine@example.com'], $this->messages($port)[0]['rcpt_tos']);
        $this->assertSame(1, $this->connections($port));
    }

    /** @dataProvider withAndWithoutPipelining */
    public function testTemporaryRejectionIsTransient(bool $pipelining): void
    {
        $port = $this->startSink(self::pipelining($pipelining));
        $e = $this->sendFails($this->mailer($port), self::simple('busy@example.com'));
        $this->assertSame(451, $e->getCode());
        $this->assertTrue($e->isTransient());
        $this->assertStringContainsString('451 4.3.0', $e->getMessage());
        $this->assertSame([], $this->messages($port));
    }

    /**
     * A refused sender, a refused DATA and one refused recipient among
     * several: the first refusal is the error, nothing is delivered, the
     * body never reaches the server, and the connection carries on.
     *
     * @dataProvider withAndWithoutPipelining
     */
    public function testEveryRefusalIsReportedAndTheConnectionStaysUsable(bool $pipelining): void
    {
        $port = $this->startSink(self::pipelining($pipelining));
        $mailer = $this->mailer($port);
        $e = $this->sendFails($mailer, ['from' => 'refused@example.com'] + self::simple('a@example.com'));
        $this->assertSame([550, true], [$e->getCode(), $e->isPermanent()]);
        $this->assertStringContainsString('rejected MAIL FROM:<refused@example.com>: 550 5.7.1 <refused@example.com>: sender refused', $e->getMessage());
        $e = $this->sendFails($mailer, self::simple('nodata@example.com'));
        $this->assertSame([554, true], [$e->getCode(), $e->isPermanent()]);
        $this->assertStringContainsString('rejected DATA: 554 5.7.1 message refused', $e->getMessage());
        $e = $this->sendFails($mailer, self::simple(['ok@example.com', 'busy-2@example.com', 'reject-3@example.com']));
        $this->assertSame([451, true], [$e->getCode(), $e->isTransient()]);
        $this->assertStringContainsString('rejected RCPT TO:<busy-2@example.com>: 451 4.3.0', $e->getMessage());
        $e = $this->sendFails($mailer, self::simple(['reject-1@example.com', 'ok@example.com']));
        $this->assertSame(550, $e->getCode());
        $this->assertStringContainsString('rejected RCPT TO:<reject-1@example.com>', $e->getMessage());
        $this->assertSame('250 OK queued as 1', $mailer->send(self::simple('fine@example.com')));
        $messages = $this->messages($port);
        $this->assertCount(1, $messages, 'no refused message was delivered, and no body was taken for commands');
        $this->assertSame(['fine@example.com'], $messages[0]['rcpt_tos']);
        $this->assertSame(1, $this->connections($port));
    }

    public function testTlsRequiredButNotOffered(): void
    {
        $port = $this->startSink();
        $e = $this->sendFails($this->mailer($port, [], '?tls=required'), self::simple('a@example.com'));
        $this->assertSame("SMTP server 127.0.0.1:$port does not offer STARTTLS, which the DSN requires (tls=required)", $e->getMessage());
        $this->assertTrue($e->isPermanent());
        $this->assertSame([], $this->messages($port));
    }

    /** @dataProvider withAndWithoutPipelining */
    public function testReconnectsWhenTheServerClosedThePooledConnection(bool $pipelining): void
    {
        $port = $this->startSink(self::pipelining($pipelining));
        $mailer = $this->mailer($port);
        // The server hangs up right after accepting this message.
        $mailer->send(self::simple('close-1@example.com'));
        $mailer->send(self::simple('after-close@example.com'));
        $this->assertSame(2, $this->connections($port));
        // The server answers the next MAIL FROM on this connection with 421 and hangs up.
        $mailer->send(self::simple('dropnext@example.com'));
        $mailer->send(self::simple('after-drop@example.com'));
        $this->assertSame(3, $this->connections($port));
        $this->assertSame(
            ['close-1@example.com', 'after-close@example.com', 'dropnext@example.com', 'after-drop@example.com'],
            array_merge(...array_column($this->messages($port), 'rcpt_tos')),
        );
    }

    public function testReconnectsAfterTheServersIdleTimeout(): void
    {
        $port = $this->startSink(['--idle-timeout', '0.3']);
        $mailer = $this->mailer($port);
        $mailer->send(self::simple('first@example.com'));
        usleep(800000);
        $mailer->send(self::simple('second@example.com'));
        $this->assertCount(2, $this->messages($port));
        $this->assertSame(2, $this->connections($port));
    }

    /** @dataProvider invalidMessages */
    public function testInvalidInputIsRefusedBeforeAnyNetworkIo(array $message, string $expected): void
    {
        $listener = stream_socket_server('tcp://127.0.0.1:0');
        $name = stream_socket_get_name($listener, false);
        $mailer = new Mailer('smtp://' . $name);
        $e = $this->sendFails($mailer, $message);
        $this->assertSame($expected, $e->getMessage());
        $this->assertTrue($e->isPermanent());
        $this->assertSame(0, $e->getCode());
        $this->assertFalse(@stream_socket_accept($listener, 0), 'no connection was made');

        $results = $mailer->sendMany(['bad' => $message]);
        $this->assertSame(['bad' => ['ok' => false, 'response' => '', 'code' => 0, 'error' => $expected, 'permanent' => true]], $results);
        $this->assertFalse(@stream_socket_accept($listener, 0), 'no connection was made');
    }

    public static function invalidMessages(): array
    {
        $ok = self::simple('a@example.com');
        return [
            'no recipient' => [['from' => 's@example.com', 'subject' => 'x'], "invalid message: 'to' is required: give at least one recipient in 'to', 'cc' or 'bcc'"],
            'no sender' => [['to' => 'a@example.com'], "invalid message: 'from' is required"],
            'malformed from' => [['from' => 'shop at example.com'] + $ok, "invalid message: 'from' 'shop at example.com' is not a valid email address"],
            'malformed seed to_email' => [['from_email' => 's@example.com', 'to_email' => 'xx.@163.com'], "invalid message: 'to_email' 'xx.@163.com' is not a valid email address"],
            'malformed second to' => [['to' => ['a@example.com', 'nope']] + $ok, "invalid message: 'to[1]' 'nope' is not a valid email address"],
            'malformed cc' => [['cc' => 'nope'] + $ok, "invalid message: 'cc' 'nope' is not a valid email address"],
            'malformed bcc' => [['bcc' => ['x@example.com', '@example.com']] + $ok, "invalid message: 'bcc[1]' '@example.com' is not a valid email address"],
            'malformed reply_to' => [['reply_to' => 'nope'] + $ok, "invalid message: 'reply_to' 'nope' is not a valid email address"],
            'CRLF in subject' => [['subject' => "Hi\r\nBcc: victim@example.com"] + $ok, "invalid message: 'subject' contains a line break or NUL (header injection refused)"],
            'LF in seed title' => [['from_email' => 's@example.com', 'to_email' => 'a@example.com', 'title' => "Hi\nBcc: victim@example.com"], "invalid message: 'title' contains a line break or NUL (header injection refused)"],
            'CRLF in a to name' => [['to' => "Eve\r\nBcc: victim@example.com <e@example.com>"] + $ok, "invalid message: 'to' contains a line break or NUL (header injection refused)"],
            'CRLF in a header value' => [['headers' => ['X-Tag' => "a\r\nBcc: victim@example.com"]] + $ok, "invalid message: 'headers[X-Tag]' contains a line break or NUL (header injection refused)"],
            'bad header name' => [['headers' => ['X Tag' => 'a']] + $ok, "invalid message: 'headers[X Tag]' is not a valid header name"],
            'reserved header' => [['headers' => ['Subject' => 'a']] + $ok, "invalid message: 'headers[Subject]' is set through 'subject'"],
            'CRLF in an attachment name' => [['attachments' => [['data' => 'x', 'name' => "a\r\nb.txt"]]] + $ok, "invalid message: 'attachments[0][name]' contains a line break or NUL (header injection refused)"],
            'missing attachment file' => [['attachments' => ['/nonexistent/invoice.pdf']] + $ok, "invalid message: 'attachments[0]' cannot read '/nonexistent/invoice.pdf': No such file or directory (os error 2)"],
            'attachment data without name' => [['attachments' => [['data' => 'x']]] + $ok, "invalid message: 'attachments[0]' needs a 'name' when given as 'data'"],
            'non-UTF-8 text' => [['text' => "\xff\xfe"] + $ok, "invalid message: 'text' must be valid UTF-8 text"],
            'object as subject' => [['subject' => new stdClass()] + $ok, "invalid message: 'subject' must be a string, stdClass given"],
            'unknown key' => [['attachements' => []] + $ok, "invalid message: 'attachements' is not a message field; did you mean 'attachments'?"],
            'alias twice' => [['title' => 'x'] + $ok, "invalid message: 'subject' given together with 'title'; use one of them"],
        ];
    }

    public function testConstructorRejectsBadDsnAndOptions(): void
    {
        $cases = [
            ['http://u:secret@h', [], "invalid DSN 'http://u:***@h': unknown scheme 'http' (allowed: smtp, smtps)"],
            ['smtp://h?tls=always', [], "invalid DSN 'smtp://h?tls=always': tls=always (allowed: required, opportunistic, none)"],
            ['smtp://h', ['pool_size' => 0], "invalid mailer option 'pool_size': 0 (allowed: an integer from 1 to 256)"],
            ['smtp://h', ['timout' => 1], "invalid mailer option 'timout': unknown option, did you mean 'timeout'?"],
            ['smtp://h', ['ca_file' => '/nonexistent/ca.pem'], "invalid mailer option 'ca_file': cannot read '/nonexistent/ca.pem': "],
        ];
        foreach ($cases as [$dsn, $options, $expected]) {
            try {
                new Mailer($dsn, $options);
                $this->fail("accepted $dsn " . json_encode($options));
            } catch (MailException $e) {
                $this->assertStringStartsWith($expected, $e->getMessage());
                $this->assertTrue($e->isPermanent());
            }
        }
    }

    public function testSendManyReportsEachMessageUnderItsKey(): void
    {
        $port = $this->startSink();
        $results = $this->mailer($port)->sendMany([
            'welcome' => self::simple('a@example.com'),
            'bounce' => self::simple('reject@example.com'),
            'later' => self::simple('busy@example.com'),
            'broken' => ['to' => 'a@example.com'],
            'junk' => 'not an array',
            7 => self::simple('b@example.com'),
        ]);
        $this->assertSame(['welcome', 'bounce', 'later', 'broken', 'junk', 7], array_keys($results));
        $this->assertTrue($results['welcome']['ok']);
        $this->assertSame(250, $results['welcome']['code']);
        $this->assertMatchesRegularExpression('/^250 OK queued as \d+$/', $results['welcome']['response']);
        $this->assertSame('', $results['welcome']['error']);
        $this->assertFalse($results['welcome']['permanent']);
        $this->assertSame(
            ['ok' => false, 'response' => '550 5.1.1 <reject@example.com>: recipient rejected', 'code' => 550, 'permanent' => true],
            array_diff_key($results['bounce'], ['error' => 0]),
        );
        $this->assertStringContainsString('rejected RCPT TO:<reject@example.com>', $results['bounce']['error']);
        $this->assertSame([false, 451, false], [$results['later']['ok'], $results['later']['code'], $results['later']['permanent']]);
        $this->assertSame("invalid message: 'from' is required", $results['broken']['error']);
        $this->assertSame("invalid message: 'messages[junk]' must be an array, string given", $results['junk']['error']);
        $this->assertTrue($results[7]['ok']);
        $rcpts = array_merge(...array_column($this->messages($port), 'rcpt_tos'));
        sort($rcpts);
        $this->assertSame(['a@example.com', 'b@example.com'], $rcpts);
        $this->assertSame([], $this->mailer($port)->sendMany([]));
    }

    // ---- TLS and AUTH ---------------------------------------------------

    public function testStartTlsWithACustomCa(): void
    {
        $tls = $this->certificates();
        $port = $this->startSink(['--tls-cert', $tls['cert'], '--tls-key', $tls['key']]);
        $this->mailer($port, ['ca_file' => $tls['ca']], '?tls=required')->send(self::simple('required@example.com'));
        // Plain smtp:// upgrades too when the server offers STARTTLS.
        $this->mailer($port, ['ca_file' => $tls['ca']])->send(self::simple('opportunistic@example.com'));
        $this->mailer($port, [], '?tls=none')->send(self::simple('clear@example.com'));
        $this->assertSame([true, true, false], array_column($this->messages($port), 'tls'));
    }

    public function testUntrustedCertificateFailsUnlessVerificationIsDisabled(): void
    {
        $tls = $this->certificates();
        $port = $this->startSink(['--tls-cert', $tls['cert'], '--tls-key', $tls['key']]);
        $e = $this->sendFails($this->mailer($port, [], '?tls=required'), self::simple('a@example.com'));
        $this->assertStringStartsWith("TLS with SMTP server 127.0.0.1:$port failed: ", $e->getMessage());
        $this->assertStringContainsString('UnknownIssuer', $e->getMessage());
        $this->assertTrue($e->isPermanent());
        $this->mailer($port, ['verify_peer' => false], '?tls=required')->send(self::simple('b@example.com'));
        $this->assertSame([true], array_column($this->messages($port), 'tls'));
    }

    public function testImplicitTls(): void
    {
        $tls = $this->certificates();
        $port = $this->startSink(['--tls-cert', $tls['cert'], '--tls-key', $tls['key'], '--implicit-tls']);
        $mailer = new Mailer("smtps://127.0.0.1:$port", ['ca_file' => $tls['ca']]);
        $this->assertMatchesRegularExpression('/^250 OK queued as 1$/', $mailer->send(self::simple('a@example.com')));
        $mailer->send(self::simple('b@example.com'));
        $this->assertSame([true, true], array_column($this->messages($port), 'tls'));
        $this->assertSame(1, $this->connections($port));
    }

    public function testAuthentication(): void
    {
        $port = $this->startSink(['--auth', 'mailer:s3cr3t:x']);
        (new Mailer("smtp://mailer:s3cr3t%3Ax@127.0.0.1:$port"))->send(self::simple('a@example.com'));
        $this->assertSame(['mailer'], array_column($this->messages($port), 'auth'));
        $e = $this->sendFails(new Mailer("smtp://mailer:wrong@127.0.0.1:$port"), self::simple('b@example.com'));
        $this->assertSame(535, $e->getCode());
        $this->assertTrue($e->isPermanent());
        $this->assertStringContainsString('AUTH PLAIN', $e->getMessage());
        $this->assertStringNotContainsString('wrong', $e->getMessage());

        $login = $this->startSink(['--auth', 'mailer:pw', '--auth-mechanism', 'LOGIN']);
        (new Mailer("smtp://mailer:pw@127.0.0.1:$login"))->send(self::simple('c@example.com'));
        $this->assertSame(['mailer'], array_column($this->messages($login), 'auth'));
    }

    // ---- end to end -----------------------------------------------------

    /**
     * The seed-shaped server (examples/mail_server.php: 1 worker, 8 task
     * workers, sendEmail() through the mailer) gets 10,000 emails from
     * examples/mail_client.php; every one reaches the SMTP server once.
     *
     * @dataProvider withAndWithoutPipelining
     */
    public function testTenThousandQueuedEmailsArriveExactlyOnce(bool $pipelining): void
    {
        $total = 10000;
        $sink = $this->startSink(self::pipelining($pipelining));
        $server = $this->startServer(
            'require ' . var_export(self::EXAMPLES . '/mail_server.php', true) . ";\n",
            ['TASKQ_SMTP_DSN' => "smtp://127.0.0.1:$sink"],
        );
        $client = 'require ' . var_export(self::EXAMPLES . '/mail_client.php', true) . ';';
        [$code, $out, $err] = $this->runPhp("<?php \$argv = ['mail_client.php', '$total']; $client", 120, ['TASKQ_PORT' => (string) $this->port]);
        $this->assertSame(0, $code, $err);
        $this->assertStringContainsString("queued $total/$total emails", $out);
        $this->assertStringContainsString("\nsent $total, failed 0, in ", $out, 'the client followed its batch to the end');

        $dir = $this->sinkDir($sink);
        $this->waitUntil(fn () => count(glob("$dir/msg-*.json")) >= $total, 120, "$total emails at the SMTP server", $server);
        usleep(500000); // anything sent twice would arrive now
        $files = glob("$dir/msg-*.json");
        $this->assertCount($total, $files);
        $orders = [];
        $ids = [];
        foreach ($files as $file) {
            $raw = base64_decode(json_decode(file_get_contents($file), true)['data']);
            $orders[] = preg_match('/^X-Order: (\d+)\r$/m', $raw, $m) ? (int) $m[1] : "no X-Order in $file";
            $ids[] = preg_match('/^Message-ID: (.+)\r$/m', $raw, $m) ? $m[1] : "no Message-ID in $file";
        }
        sort($orders);
        $this->assertSame(range(1, $total), $orders, 'every email exactly once');
        $this->assertCount($total, array_unique($ids), 'every Message-ID once');
        $this->assertStringNotContainsString('not sent', $server->stdout());
        $this->assertLessThanOrEqual(8, $this->connections($sink), 'one pooled connection per task worker');
        $this->stopServer($server);
    }

    /**
     * The example client follows its batch to the end and sums up the
     * emails the SMTP server refused, by error; it exits with 2.
     */
    public function testTheExampleClientReportsWhichEmailsWereNotSentAndWhy(): void
    {
        $sink = $this->startSink();
        $server = $this->startServer(
            'require ' . var_export(self::EXAMPLES . '/mail_server.php', true) . ";\n",
            ['TASKQ_SMTP_DSN' => "smtp://127.0.0.1:$sink"],
        );
        file_put_contents("$this->dir/recipients", "a@example.com\nreject1@example.com\nb@example.com\nc@example.com\nreject2@example.com\n");
        $client = 'require ' . var_export(self::EXAMPLES . '/mail_client.php', true) . ';';
        [$code, $out, $err] = $this->runPhp("<?php \$argv = ['mail_client.php', '0', '$this->dir/recipients']; $client", 60, ['TASKQ_PORT' => (string) $this->port]);
        $this->assertSame(2, $code, "$out\n$err");
        $this->assertStringContainsString("\nsent 3, failed 2, in ", $out);
        $this->assertSame(2, preg_match_all('~^\s+1 × TaskQ\\\\MailException: .*550 5\.1\.1 <reject\d@example\.com>: recipient rejected~m', $out), $out);
        $this->assertCount(3, glob($this->sinkDir($sink) . '/msg-*.json'));
        $this->stopServer($server);
    }

    /**
     * A mailer created and used before start() leaves a pooled connection in
     * the master; every forked task worker must open its own instead of
     * talking on the inherited socket.
     */
    public function testAMailerUsedBeforeStartIsSafeInEveryForkedWorker(): void
    {
        $sink = $this->startSink();
        $this->startServer(<<<'PHP'
            $mailer = new TaskQ\Mailer(getenv('TASKQ_SMTP_DSN'));
            $mailer->send(['from' => 'shop@example.com', 'to' => 'master@example.com', 'subject' => 'before start']);
            $server = new TaskServer('127.0.0.1', $port);
            $server->set(['worker_num' => 1, 'task_worker_num' => 8, 'log_file' => "$dir/taskq.log"]);
            $server->on('Receive', function (TaskServer $server, int $fd, int $reactorId, string $data) {
                for ($i = 0; $i < 40; $i++) {
                    $server->task("$i");
                }
            });
            $server->on('Task', function (TaskServer $server, int $taskId, int $srcWorkerId, $data) use ($mailer) {
                try {
                    $mailer->send(['from' => 'shop@example.com', 'to' => "task$data@example.com", 'subject' => "task $data"]);
                } catch (TaskQ\MailException $e) {
                    record('failed', ['error' => $e->getMessage()]);
                }
            });
            $server->start();
            PHP, ['TASKQ_SMTP_DSN' => "smtp://127.0.0.1:$sink"]);
        [$code, , $err] = $this->runPhp("<?php \$c = new TaskClient(); \$c->connect('127.0.0.1', $this->port) or exit(1); \$c->send('go');", 10);
        $this->assertSame(0, $code, $err);
        $this->waitUntil(fn () => count($this->messages($sink)) >= 41, 20, '41 emails at the SMTP server');
        usleep(300000);
        $messages = $this->messages($sink);
        $this->assertSame([], $this->events('failed'));
        $rcpts = array_merge(...array_column($messages, 'rcpt_tos'));
        sort($rcpts);
        $expected = array_merge(['master@example.com'], array_map(fn ($i) => "task$i@example.com", range(0, 39)));
        sort($expected);
        $this->assertSame($expected, $rcpts);
        $ids = array_map(fn ($m) => self::split($m['raw'])[0]['message-id'][0], $messages);
        $this->assertCount(41, array_unique($ids), 'Message-IDs never repeat across forked workers');
        $this->assertGreaterThan(1, $this->connections($sink), 'the workers opened their own connections');
    }

    // ---- helpers --------------------------------------------------------

    public static function withAndWithoutPipelining(): array
    {
        return ['without PIPELINING' => [false], 'with PIPELINING' => [true]];
    }

    /** The sink's arguments for offering PIPELINING or not. */
    private static function pipelining(bool $on): array
    {
        return $on ? ['--pipelining'] : [];
    }

    private static function simple(string|array $to): array
    {
        return ['from' => 'shop@example.com', 'to' => $to, 'subject' => 'Hello', 'text' => 'Hi'];
    }

    private function mailer(int $port, array $options = [], string $query = ''): Mailer
    {
        return new Mailer("smtp://127.0.0.1:$port$query", $options + ['timeout' => 5, 'connect_timeout' => 5]);
    }

    private function sendFails(Mailer $mailer, array $message): MailException
    {
        try {
            $reply = $mailer->send($message);
        } catch (MailException $e) {
            return $e;
        }
        $this->fail("sent although it should fail: $reply");
    }

    /** Headers (lower-case name => unfolded values) and body of a message or part. */
    private static function split(string $raw): array
    {
        [$head, $body] = explode("\r\n\r\n", $raw, 2) + [1 => ''];
        $headers = [];
        foreach (explode("\r\n", preg_replace("/\r\n[ \t]+/", ' ', $head)) as $line) {
            [$name, $value] = explode(':', $line, 2);
            $headers[strtolower($name)][] = trim($value);
        }
        return [$headers, $body];
    }

    /** The leaf parts of a MIME message, depth first, as [headers, body]. */
    private static function parts(string $raw): array
    {
        [$h, $body] = self::split($raw);
        if (!preg_match('/^multipart\/[a-z]+;.*boundary="?([^";]+)"?/i', $h['content-type'][0] ?? '', $m)) {
            return [[$h, $body]];
        }
        $chunks = explode("--$m[1]", $body);
        $parts = [];
        foreach (array_slice($chunks, 1, -1) as $chunk) {
            $parts = array_merge($parts, self::parts(substr($chunk, 2, -2)));
        }
        return $parts;
    }

    /** A part's body with its Content-Transfer-Encoding undone. */
    private static function decode(array $headers, string $body): string
    {
        return match (strtolower($headers['content-transfer-encoding'][0] ?? '7bit')) {
            'base64' => base64_decode($body),
            'quoted-printable' => quoted_printable_decode($body),
            default => $body,
        };
    }

    /** A CA and a server certificate for 127.0.0.1 it signed (PEM files). */
    private function certificates(): array
    {
        $cnf = "$this->dir/openssl.cnf";
        file_put_contents($cnf, implode("\n", [
            '[req]', 'distinguished_name = dn', '[dn]',
            '[ca]', 'basicConstraints = critical,CA:TRUE', 'keyUsage = critical,keyCertSign,cRLSign',
            '[leaf]', 'basicConstraints = critical,CA:FALSE', 'keyUsage = critical,digitalSignature',
            'extendedKeyUsage = serverAuth', 'subjectAltName = IP:127.0.0.1,DNS:localhost', '',
        ]));
        $key = fn () => openssl_pkey_new(['private_key_type' => OPENSSL_KEYTYPE_EC, 'curve_name' => 'prime256v1']);
        $opts = fn (string $ext) => ['config' => $cnf, 'digest_alg' => 'sha256', 'x509_extensions' => $ext];
        $caKey = $key();
        $ca = openssl_csr_sign(openssl_csr_new(['commonName' => 'taskq test CA'], $caKey, $opts('ca')), null, $caKey, 2, $opts('ca'), 1);
        $leafKey = $key();
        $leaf = openssl_csr_sign(openssl_csr_new(['commonName' => '127.0.0.1'], $leafKey, $opts('leaf')), $ca, $caKey, 2, $opts('leaf'), 2);
        $this->assertNotFalse($leaf, (string) openssl_error_string());
        openssl_x509_export_to_file($ca, "$this->dir/ca.pem");
        openssl_x509_export_to_file($leaf, "$this->dir/cert.pem");
        openssl_pkey_export_to_file($leafKey, "$this->dir/key.pem", null, ['config' => $cnf]);
        return ['ca' => "$this->dir/ca.pem", 'cert' => "$this->dir/cert.pem", 'key' => "$this->dir/key.pem"];
    }
}
