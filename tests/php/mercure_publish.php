<?php
// A Mercure publisher with Debian's php-symfony-mercure, as a Symfony app publishes:
// php tests/php/mercure_publish.php HUB_URL JWT TOPIC DATA [ID TYPE RETRY PRIVATE]
// PRIVATE is "private" for a private update, "public" otherwise. Prints what the hub
// answered (the update's id) on stdout; a failure is its message on stderr, exit 1.
declare(strict_types=1);

require_once 'Symfony/Component/Mercure/autoload.php';

use Symfony\Component\Mercure\Hub;
use Symfony\Component\Mercure\Jwt\StaticTokenProvider;
use Symfony\Component\Mercure\Update;

[, $url, $jwt, $topic, $data] = $argv;
$id = $argv[5] ?? null;
$type = $argv[6] ?? null;
$retry = isset($argv[7]) ? (int) $argv[7] : null;
$private = ($argv[8] ?? 'public') === 'private';

$hub = new Hub($url, new StaticTokenProvider($jwt));
try {
    echo $hub->publish(new Update($topic, $data, $private, $id, $type, $retry));
} catch (Throwable $error) {
    $messages = [];
    for ($e = $error; $e !== null; $e = $e->getPrevious()) {
        $messages[] = get_class($e) . ': ' . $e->getMessage();
    }
    fwrite(STDERR, implode("\n", $messages) . "\n");
    exit(1);
}
