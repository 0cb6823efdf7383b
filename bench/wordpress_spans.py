"""Where a request's time goes on a lab WordPress site, for ``bench/wordpress.py --profile``.

A must-use plugin (``PROFILE_PLUGIN``) writes timing spans of every request to the PHP error
log (booted, REST ready, dispatched, the plugin's shutdown work, the POST to the relay);
``profile_summary`` gives their medians per kind of request. ``shutdown_steps`` times the
plugin's own steps at the end of a save one by one in one PHP process on a quiet site.
"""

from __future__ import annotations

import json
import math
import re
import statistics

from tests.e2e.wplab import Site


def percentile(values: list[float], p: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


STEPS = r"""
$prop = function ($object, $name) {
    $property = new ReflectionProperty($object, $name);
    $property->setAccessible(true);
    return $property;
};
$parts = $prop('UserRelay_Plugin', 'parts')->getValue();
[$hooks, $outbox, $settings] = [$parts['hooks'], $parts['outbox'], $parts['settings']];
$steps = ['wp_insert_user' => [], 'snapshot' => [], 'enqueue' => [], 'claim' => [], 'send' => []];
$run = bin2hex(random_bytes(3));
for ($i = 0; $i < COUNT; $i++) {
    $t = microtime(true);
    wp_insert_user(['user_login' => "steps{$run}_$i", 'user_email' => "steps{$run}_$i@example.test",
        'user_pass' => 'steps-Pass-1', 'role' => 'subscriber']);
    $steps['wp_insert_user'][] = microtime(true) - $t; $t = microtime(true);
    $events = (new UserRelay_Snapshot($settings))->build($prop($hooks, 'users')->getValue($hooks),
        $prop($hooks, 'deleted')->getValue($hooks), $prop($hooks, 'origins')->getValue($hooks));
    $steps['snapshot'][] = microtime(true) - $t; $t = microtime(true);
    $outbox->enqueue($events);
    $prop($hooks, 'users')->setValue($hooks, []);
    $steps['enqueue'][] = microtime(true) - $t; $t = microtime(true);
    $outbox->claim_kick();
    $steps['claim'][] = microtime(true) - $t; $t = microtime(true);
    $outbox->flush(UserRelay_Outbox::BACKGROUND_BUDGET);
    $outbox->release_kick();
    $steps['send'][] = microtime(true) - $t;
}
echo json_encode($steps);
"""


def shutdown_steps(site: Site, count: int = 40) -> None:
    """The plugin's own steps at the end of a save, timed one by one in one PHP process on a
    quiet site (no concurrent requests): what a save costs without contention."""
    steps = site.php_json(STEPS.replace("COUNT", str(count)))
    print("  the plugin's steps in one PHP process, no other load (median / p95 ms): " + ", ".join(
        f"{name} {statistics.median(v) * 1000:.2f} / {percentile(v, 95) * 1000:.2f}"
        for name, v in steps.items()))


PROFILE_PLUGIN = r"""<?php
// Bench: timing spans of each request, in ms since it started, to the PHP error log.
$GLOBALS['bench_spans'] = array();
function bench_span( $name ) {
	$ms = ( microtime( true ) - $_SERVER['REQUEST_TIME_FLOAT'] ) * 1000;
	$GLOBALS['bench_spans'][ $name ] = round( $ms, 2 );
}
add_action( 'muplugins_loaded', function () { bench_span( 'booted' ); } );
add_action( 'rest_api_init', function () { bench_span( 'rest_init' ); } );
add_filter( 'rest_post_dispatch', function ( $r ) { bench_span( 'dispatched' ); return $r; } );
add_filter( 'pre_http_request', function ( $pre ) { bench_span( 'http_start' ); return $pre; } );
add_action( 'http_api_debug', function () { bench_span( 'http_done' ); } );
add_filter( 'query', function ( $q ) {
	// The plugin's own steps, seen by their queries: the outbox rows stored, then the flush
	// taking its lock (under PHP-FPM just after fastcgi_finish_request(): the answer is out).
	$spans = $GLOBALS['bench_spans'];
	if ( ! isset( $spans['enqueued'] ) && false !== strpos( $q, 'userrelay_outbox (event_id' ) ) {
		bench_span( 'enqueued' );
	} elseif ( ! isset( $spans['flush_lock'] )
		&& false !== strpos( $q, "GET_LOCK('userrelay_flush_" ) ) {
		bench_span( 'flush_lock' );
	}
	return $q;
} );
add_action( 'shutdown', function () { bench_span( 'shutdown' ); }, 0 );
add_action( 'shutdown', function () { bench_span( 'before_plugin' ); }, 999 );
add_action( 'shutdown', function () {
	bench_span( 'after_plugin' );
	$uri = isset( $_SERVER['REQUEST_URI'] ) ? $_SERVER['REQUEST_URI'] : '';
	$kind = isset( $_POST['userrelay_flush'] ) ? 'kick'
		: ( false !== strpos( $uri, 'wp/v2/users' ) ? 'create'
		: ( false !== strpos( $uri, 'userrelay/v1/events' ) ? 'events' : 'other' ) );
	$kind .= class_exists( 'UserRelay_Plugin', false ) ? '+' : '-';
	error_log( 'BENCHSPAN ' . $kind . ' ' . wp_json_encode( $GLOBALS['bench_spans'] ) );
}, 1001 );
"""


def log_size(site: Site) -> int:
    return site.debug_log.stat().st_size if site.debug_log.exists() else 0


def profile_summary(site: Site, ranges: list[tuple[int, int]]) -> None:
    """Median of each span, per kind of request, from the PHP error log's byte ``ranges``."""
    spans: dict[str, dict[str, list[float]]] = {}
    text: list[str] = []
    with site.debug_log.open("rb") as log:
        for start, end in ranges:
            log.seek(start)
            text.append(log.read(end - start).decode(errors="replace"))
    for line in "\n".join(text).splitlines():
        if match := re.search(r"BENCHSPAN (\S+) (\{.*\})", line):
            for name, ms in json.loads(match.group(2)).items():
                spans.setdefault(match.group(1), {}).setdefault(name, []).append(ms)
    for kind, named in sorted(spans.items()):
        parts = "  ".join(f"{name} {statistics.median(v):.1f}/{percentile(v, 95):.1f}"
                          for name, v in named.items())
        count = max(len(v) for v in named.values())
        print(f"    profile {kind:7} ({count} requests), ms since start, median/p95: {parts}")


