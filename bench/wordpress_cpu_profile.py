"""Where site A's CPU goes in a user create, by call stack (``bench/wordpress.py
--cpu-profile``).

A must-use plugin on site A samples the CPU of each REST user create (Debian's php-excimer, a
sampling profiler: the thread's CPU time, every 0.1 ms, the work after the answer included)
and writes its stacks, collapsed, to a file named by the state of site A's plugin (off, on,
before). ``summary`` gives the CPU per create in each state and, for each state of the plugin,
the call stacks that spend more than with the plugin inactive.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

PACKAGES = ["php-excimer"]
PERIOD_MS = 0.1
# Frames every hook call passes through: they say nothing of where the time goes.
WRAPPERS = {"(all)", "WP_Hook::apply_filters", "WP_Hook::do_action", "do_action",
            "apply_filters", "do_action_ref_array"}

PLUGIN = r"""<?php
// Bench: site A's CPU per REST user create, by call stack (php-excimer).
if ( class_exists( 'ExcimerProfiler' ) && 'POST' === ( $_SERVER['REQUEST_METHOD'] ?? '' )
	&& false !== strpos( $_SERVER['REQUEST_URI'] ?? '', 'wp/v2/users' ) ) {
	$bench_cpu = new ExcimerProfiler();
	$bench_cpu->setPeriod( PERIOD );
	$bench_cpu->setEventType( EXCIMER_CPU );
	$bench_cpu->start();
	// After WordPress's own shutdown (registered before this plugin loaded): the send after
	// fastcgi_finish_request() is counted too.
	register_shutdown_function( function () use ( $bench_cpu ) {
		$bench_cpu->stop();
		$active = (array) get_option( 'active_plugins' );
		$state  = in_array( 'BEFORE_DIR/userrelay.php', $active, true ) ? 'before'
			: ( class_exists( 'UserRelay_Plugin' ) ? 'on' : 'off' );
		$stacks = $bench_cpu->getLog()->formatCollapsed();
		file_put_contents( 'OUT/' . $state . '-' . getmypid() . '-' . uniqid() . '.txt', $stacks );
	} );
}
"""


def plugin(out: Path, before_dir: str) -> str:
    return (PLUGIN.replace("PERIOD", str(PERIOD_MS / 1000)).replace("OUT", str(out))
            .replace("BEFORE_DIR", before_dir))


def _load(folder: Path, state: str) -> tuple[int, Counter[str]]:
    """Creates profiled in ``state``, and each frame's samples wherever it is on the stack."""
    files = sorted(folder.glob(f"{state}-*.txt"))
    inclusive: Counter[str] = Counter()
    for file in files:
        for line in file.read_text().splitlines():
            if line.strip():
                stack, samples = line.rsplit(" ", 1)
                inclusive["(all)"] += int(samples)
                for frame in {f for f in stack.split(";") if f}:
                    inclusive[frame] += int(samples)
    return len(files), inclusive


def summary(folder: Path, states: list[str], top: int = 12) -> None:
    loaded = {state: _load(folder, state) for state in states}
    if not all(count for count, _ in loaded.values()):
        print(f"  CPU profile: no creates profiled in some state ({folder}); is php-excimer "
              "loaded by the site's PHP?")
        return

    def per_create(state: str, frame: str) -> float:
        count, inclusive = loaded[state]
        return inclusive[frame] * PERIOD_MS / count

    print("  site a's CPU per REST create, by call stack (php-excimer, ms): " + ", ".join(
        f"{state} {per_create(state, '(all)'):.2f} ({loaded[state][0]} creates)"
        for state in states))
    for state in (s for s in states if s != "off"):
        frames = (set(loaded[state][1]) | set(loaded["off"][1])) - WRAPPERS
        more = sorted(frames, key=lambda f: per_create("off", f) - per_create(state, f))
        print(f"  spending more with the plugin {state} than inactive (inclusive ms per create):")
        for frame in more[:top]:
            print(f"    {per_create(state, frame) - per_create('off', frame):+7.2f}  {frame[:100]}")
