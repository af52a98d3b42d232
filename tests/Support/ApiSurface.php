<?php
namespace TaskQ\Tests\Support;

/**
 * The declared API of taskq (classes with their methods, parameters,
 * properties and constants; functions; constants; class aliases) as plain
 * arrays, read by Reflection, so the loaded extension and
 * php/taskq.stub.php (loaded in another process, where the extension is
 * not) can be compared member by member and their differences named.
 */
final class ApiSurface
{
    /**
     * The file name ext-php-rs gives PHP source an extension runs: the
     * Swoole functions and Swoole\Timer of src/php/swoole_functions.php.
     */
    public const EMBEDDED_FILE = 'embedded_php';

    /** What the extension declares in this process, with the INI settings it runs under. */
    public static function ofExtension(string $extension = 'taskq'): array
    {
        $ext = new \ReflectionExtension($extension);
        $classes = array_values(array_map(fn (\ReflectionClass $c) => $c->getName(), $ext->getClasses()));
        $functions = array_values(array_map(fn (\ReflectionFunction $f) => $f->getName(), $ext->getFunctions()));
        foreach (get_declared_classes() as $name) {
            $class = new \ReflectionClass($name);
            if ($class->getName() === $name && $class->getFileName() === self::EMBEDDED_FILE) {
                $classes[] = $name;
            }
        }
        foreach (get_defined_functions()['user'] as $name) {
            $function = new \ReflectionFunction($name);
            if ($function->getFileName() === self::EMBEDDED_FILE) {
                $functions[] = $function->getName();
            }
        }
        $aliases = [];
        foreach (get_declared_classes() as $name) {
            $target = (new \ReflectionClass($name))->getName();
            if ($target !== $name && in_array($target, $classes, true)) {
                $aliases[strtolower($name)] = $target;
            }
        }
        return self::surface($classes, $functions, $ext->getConstants(), $aliases);
    }

    /**
     * What a stub file declared, given the names it added to this process.
     * A class that declares nothing of its own and extends another class of
     * the stub is how the stub writes an alias.
     */
    public static function ofStub(array $classes, array $functions, array $constants): array
    {
        $aliases = [];
        foreach ($classes as $name) {
            $class = new \ReflectionClass($name);
            $parent = $class->getParentClass();
            $own = self::describeClass($class);
            if ($parent && in_array($parent->getName(), $classes, true) && !$own['methods'] && !$own['properties'] && !$own['constants']) {
                $aliases[strtolower($name)] = $parent->getName();
            }
        }
        $real = array_values(array_filter($classes, fn ($c) => !isset($aliases[strtolower($c)])));
        return self::surface($real, $functions, $constants, $aliases);
    }

    private static function surface(array $classes, array $functions, array $constants, array $aliases): array
    {
        $out = ['classes' => [], 'functions' => [], 'constants' => $constants, 'aliases' => $aliases];
        foreach ($classes as $name) {
            $out['classes'][strtolower($name)] = self::describeClass(new \ReflectionClass($name));
        }
        foreach ($functions as $name) {
            $out['functions'][strtolower($name)] = self::describeFunction(new \ReflectionFunction($name));
        }
        ksort($out['classes']);
        ksort($out['functions']);
        ksort($out['constants']);
        ksort($out['aliases']);
        return $out;
    }

    /** A class with the members it declares itself (inherited ones belong to the parent). */
    private static function describeClass(\ReflectionClass $class): array
    {
        $name = $class->getName();
        $interfaces = $class->getInterfaceNames();
        sort($interfaces);
        $described = [
            'name' => $name,
            'kind' => $class->isInterface() ? 'interface' : ($class->isTrait() ? 'trait' : 'class'),
            'final' => $class->isFinal(),
            'abstract' => $class->isAbstract() && !$class->isInterface(),
            'parent' => $class->getParentClass() ? $class->getParentClass()->getName() : null,
            'interfaces' => $interfaces,
            'constants' => [],
            'properties' => [],
            'methods' => [],
        ];
        foreach ($class->getReflectionConstants() as $constant) {
            if ($constant->getDeclaringClass()->getName() === $name) {
                $described['constants'][$constant->getName()] = $constant->getValue();
            }
        }
        foreach ($class->getProperties() as $property) {
            if ($property->getDeclaringClass()->getName() === $name) {
                $described['properties'][$property->getName()] = [
                    'visibility' => self::visibility($property),
                    'static' => $property->isStatic(),
                    'readonly' => $property->isReadOnly(),
                    'type' => self::type($property->getType()),
                ];
            }
        }
        foreach ($class->getMethods() as $method) {
            if ($method->getDeclaringClass()->getName() === $name) {
                $described['methods'][strtolower($method->getName())] = self::describeFunction($method) + [
                    'visibility' => self::visibility($method),
                    'static' => $method->isStatic(),
                    'final' => $method->isFinal(),
                    'abstract' => $method->isAbstract(),
                ];
            }
        }
        ksort($described['constants']);
        ksort($described['properties']);
        ksort($described['methods']);
        return $described;
    }

    private static function describeFunction(\ReflectionFunctionAbstract $function): array
    {
        $params = [];
        foreach ($function->getParameters() as $param) {
            $default = null;
            if ($param->isDefaultValueAvailable()) {
                try {
                    $default = ['value' => $param->getDefaultValue()];
                } catch (\ReflectionException $e) {
                    $default = ['unreadable' => $e->getMessage()];
                }
            }
            $params[] = [
                'name' => $param->getName(),
                'optional' => $param->isOptional(),
                'variadic' => $param->isVariadic(),
                'byRef' => $param->isPassedByReference(),
                'type' => self::type($param->getType()),
                'default' => $default,
            ];
        }
        return [
            'name' => $function->getName(),
            'byRef' => $function->returnsReference(),
            'return' => self::type($function->getReturnType() ?? $function->getTentativeReturnType()),
            'params' => $params,
        ];
    }

    /** A type as comparable text: `?int` as `int|null`, union members sorted. */
    private static function type(?\ReflectionType $type): ?string
    {
        if ($type === null) {
            return null;
        }
        $text = (string) $type;
        if (str_starts_with($text, '?')) {
            $text = substr($text, 1) . '|null';
        }
        $parts = explode('|', $text);
        sort($parts);
        return implode('|', $parts);
    }

    private static function visibility(\ReflectionMethod|\ReflectionProperty $member): string
    {
        return $member->isPrivate() ? 'private' : ($member->isProtected() ? 'protected' : 'public');
    }

    /**
     * Every difference between the extension's surface and the stub's, one
     * sentence each; empty when they agree. Where the extension declares no
     * type or `mixed` (ext-php-rs's type for a returned zval or a property
     * read by a getter), the stub may say what the value really is.
     */
    public static function differences(array $ext, array $stub): array
    {
        $out = [];
        self::keyed($out, 'class', $ext['classes'], $stub['classes'], function (array $e, array $s) use (&$out) {
            $class = $e['name'];
            foreach (['name', 'kind', 'final', 'abstract', 'parent', 'interfaces'] as $field) {
                self::same($out, "class $class: $field", $e[$field], $s[$field]);
            }
            self::keyed($out, "constant $class::", $e['constants'], $s['constants'], function ($ev, $sv, $name) use (&$out, $class) {
                self::same($out, "constant $class::$name", $ev, $sv);
            });
            self::keyed($out, "property $class::\$", $e['properties'], $s['properties'], function (array $ep, array $sp, $name) use (&$out, $class) {
                foreach (['visibility', 'static', 'readonly'] as $field) {
                    self::same($out, "property $class::\$$name: $field", $ep[$field], $sp[$field]);
                }
                self::sameType($out, "property $class::\$$name: type", $ep['type'], $sp['type']);
            });
            self::keyed($out, "$class::", $e['methods'], $s['methods'], function (array $em, array $sm) use (&$out, $class) {
                $what = "$class::{$em['name']}()";
                foreach (['visibility', 'static', 'final', 'abstract'] as $field) {
                    self::same($out, "$what: $field", $em[$field], $sm[$field]);
                }
                self::sameFunction($out, $what, $em, $sm);
            }, '()');
        });
        self::keyed($out, 'function ', $ext['functions'], $stub['functions'], function (array $e, array $s) use (&$out) {
            self::sameFunction($out, "function {$e['name']}()", $e, $s);
        }, '()');
        self::keyed($out, 'constant ', $ext['constants'], $stub['constants'], function ($e, $s, $name) use (&$out) {
            self::same($out, "constant $name", $e, $s);
        });
        self::keyed($out, 'class alias ', $ext['aliases'], $stub['aliases'], function ($e, $s, $name) use (&$out) {
            self::same($out, "class alias $name: target", $e, $s);
        });
        return $out;
    }

    /** Reports keys on one side only, then compares the entries both have. */
    private static function keyed(array &$out, string $what, array $ext, array $stub, callable $compare, string $suffix = ''): void
    {
        foreach (array_diff_key($ext, $stub) as $key => $entry) {
            $out[] = $what . (is_array($entry) && isset($entry['name']) ? $entry['name'] : $key) . "$suffix: in the extension, missing from the stub";
        }
        foreach (array_diff_key($stub, $ext) as $key => $entry) {
            $out[] = $what . (is_array($entry) && isset($entry['name']) ? $entry['name'] : $key) . "$suffix: in the stub, not in the extension";
        }
        foreach (array_intersect_key($ext, $stub) as $key => $entry) {
            $compare($entry, $stub[$key], $key);
        }
    }

    private static function sameFunction(array &$out, string $what, array $e, array $s): void
    {
        self::same($out, "$what: name", $e['name'], $s['name']);
        self::same($out, "$what: returns by reference", $e['byRef'], $s['byRef']);
        self::sameType($out, "$what: return type", $e['return'], $s['return']);
        self::same($out, "$what: parameter count", count($e['params']), count($s['params']));
        foreach ($e['params'] as $i => $ep) {
            $sp = $s['params'][$i] ?? null;
            if ($sp === null) {
                continue;
            }
            $param = "$what: parameter #$i (\${$ep['name']})";
            foreach (['name', 'optional', 'variadic', 'byRef', 'default'] as $field) {
                self::same($out, "$param: $field", $ep[$field], $sp[$field]);
            }
            self::sameType($out, "$param: type", $ep['type'], $sp['type']);
        }
    }

    private static function sameType(array &$out, string $what, ?string $ext, ?string $stub): void
    {
        if ($ext !== null && $ext !== 'mixed') {
            self::same($out, $what, $ext, $stub);
        }
    }

    private static function same(array &$out, string $what, mixed $ext, mixed $stub): void
    {
        if ($ext !== $stub) {
            $out[] = sprintf('%s: the extension has %s, the stub %s', $what, self::show($ext), self::show($stub));
        }
    }

    private static function show(mixed $value): string
    {
        return json_encode($value, JSON_UNESCAPED_SLASHES | JSON_PRESERVE_ZERO_FRACTION);
    }
}
