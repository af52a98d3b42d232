<?php
// Prints, as JSON, what the stub file named by $argv[1] declares (see
// ApiSurface::ofStub()). Run it with `php -n`: the stub is loaded for real
// here, which only works where the taskq extension is not.
if (extension_loaded('taskq')) {
    fwrite(STDERR, "the taskq extension is loaded: run this with php -n\n");
    exit(2);
}
require __DIR__ . '/ApiSurface.php';

$classes = get_declared_classes();
$functions = get_defined_functions()['user'];
$constants = get_defined_constants(true)['user'] ?? [];

require $argv[1];

$surface = TaskQ\Tests\Support\ApiSurface::ofStub(
    array_values(array_diff(get_declared_classes(), $classes)),
    array_values(array_diff(get_defined_functions()['user'], $functions)),
    array_diff_key(get_defined_constants(true)['user'] ?? [], $constants),
);
echo json_encode($surface, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_PRESERVE_ZERO_FRACTION), "\n";
