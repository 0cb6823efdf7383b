"""The figures of bench/wordpress.py: what one server's rounds measured, per state of site A's
plugin, and the summary table of every server beside its targets."""

from __future__ import annotations

import statistics
from typing import NamedTuple

from bench.wordpress_clients import CLIENTS, PAUSE
from bench.wordpress_spans import percentile


class Column(NamedTuple):
    label: str
    kind: str
    figures: Figures


class Figures:
    """What one server's rounds measured, per state of site A's plugin: "off" (inactive),
    "on" (this working tree's plugin) and, with --before, "before" (the plugin at a revision)."""

    def __init__(self, creates: int, states: list[str]) -> None:
        self.states = states
        self.saves: dict[str, list[float]] = {s: [] for s in states}
        self.paced: dict[str, list[float]] = {s: [] for s in states}  # saves PAUSE seconds apart
        self.walls: dict[str, list[float]] = {s: [] for s in states}
        self.worst: list[dict[str, float]] = []  # per round: state -> its worst request (ms)
        self.e2e: dict[str, dict[str, list[float]]] = {
            s: {"sequential": [], "under load": []} for s in states if s != "off"}
        # Where the end-to-end time goes: (answered, at the relay, delivered to B) ms after
        # the start.
        self.legs: dict[str, dict[str, list[tuple[float, float, float]]]] = {
            s: {"sequential": [], "under load": []} for s in states if s != "off"}
        self.creates = creates
        self.cost_logs: list[tuple[int, int]] = []  # site a's error log during the cost phases
        self.apply: tuple[float, float] | None = None  # (wp_insert_user users/s, applied users/s)
        # CPU seconds each part of the lab spent in the cost phases, and the creates made there.
        self.cpu: dict[str, dict[str, float]] = {s: {} for s in states}
        self.cpu_creates: dict[str, int] = dict.fromkeys(states, 0)

    def add_cpu(self, state: str, spent: dict[str, float], creates: int) -> None:
        for part, seconds in spent.items():
            self.cpu[state][part] = self.cpu[state].get(part, 0.0) + seconds
        self.cpu_creates[state] += creates

    def cpu_per_create(self, part: str, state: str) -> float:
        """Milliseconds of ``part``'s CPU per create made in ``state``'s cost phases."""
        return 1000 * self.cpu[state].get(part, 0.0) / max(1, self.cpu_creates[state])

    def site_cpu_ratio(self, state: str = "on", base: str = "off") -> float:
        """Site A's own CPU per create (its web server and the database) in ``state`` over
        ``base``: what the plugin costs the site on a host where the relay is elsewhere."""
        def site(st: str) -> float:
            return self.cpu_per_create("site a", st) + self.cpu_per_create("database", st)
        return site(state) / site(base)

    def throughput(self, state: str = "on", base: str = "off") -> float:
        """Creates/s in ``state`` over creates/s in ``base``, over all rounds."""
        return sum(self.walls[base]) / sum(self.walls[state])

    def added(self, p: float, state: str = "on", base: str = "off", paced: bool = False) -> float:
        saves = self.paced if paced else self.saves
        return percentile(saves[state], p) - percentile(saves[base], p)

    def most_over(self, state: str = "on") -> float:
        return max(w[state] - w["off"] for w in self.worst)

    def e2e_at(self, p: float, load: str, state: str = "on") -> float:
        return percentile(self.e2e[state][load], p)

    def report(self, goals: Goals) -> None:
        off = self.saves["off"]
        for state in self.e2e:
            name = STATE_NAMES[state]
            print(f"-- plugin {name} --")
            print(f"site capacity, {len(self.walls[state])} rounds of {self.creates} creates by "
                  f"{CLIENTS} clients: inactive {statistics.median(self.walls['off']):.2f} s, "
                  f"{name} {statistics.median(self.walls[state]):.2f} s (median round); "
                  f"throughput with/without {self.throughput(state):.3f} (target >= 0.95); "
                  "rounds: " + ", ".join(f"{w:.2f}" for w in self.walls[state]) + " vs "
                  + ", ".join(f"{w:.2f}" for w in self.walls["off"]))
            for p in (50, 95, 99):
                with_, without = percentile(self.saves[state], p), percentile(off, p)
                print(f"user save p{p}: inactive {without:6.1f} ms, {name} {with_:6.1f} ms, "
                      f"added {with_ - without:+.1f} ms  ({len(off)} saves each)")
            for p in (50, 95, 99):
                with_, without = percentile(self.paced[state], p), percentile(self.paced["off"], p)
                print(f"user save p{p}, saves {PAUSE:g} s apart: inactive {without:6.1f} ms, "
                      f"{name} {with_:6.1f} ms, added {with_ - without:+.1f} ms")
            print("added time targets: <= 2 ms median, <= 5 ms p95")
            if self.cpu_creates[state]:
                print("CPU per create in the cost phases, inactive / " + name + ": " + ", ".join(
                    f"{part} {self.cpu_per_create(part, 'off'):.1f} / "
                    f"{self.cpu_per_create(part, state):.1f} ms" for part in self.cpu[state])
                    + f"; site a and its database together {self.site_cpu_ratio(state):.3f}x")
            print(f"worst request per round ({name} vs inactive): " + ", ".join(
                f"{w[state]:.0f}/{w['off']:.0f}" for w in self.worst) + " ms; most over: "
                f"{self.most_over(state):+.0f} ms (target <= +100)")
            for load, values in self.e2e[state].items():
                print(f"end to end ({load}, {len(values)} creates): p50 "
                      f"{percentile(values, 50):.1f}  p95 {percentile(values, 95):.1f}  p99 "
                      f"{percentile(values, 99):.1f} ms (targets p50 <= {goals.p50:.0f}, "
                      f"p99 <= {goals.p99:.0f})")
            for load, legs in self.legs[state].items():
                if legs:
                    print(f"  where it goes ({load}), p50 / p95 ms: start -> A answered "
                          + spread([a for a, _, _ in legs]) + "; answered -> stored at the "
                          "relay " + spread([b - a for a, b, _ in legs]) + "; stored -> B "
                          "answered the delivery " + spread([c - b for _, b, c in legs]))
        if "before" in self.e2e:
            new, old = "on", "before"
            print(f"-- plugin {STATE_NAMES[new]} against {STATE_NAMES[old]}, alternating "
                  f"rounds: capacity {self.throughput(new, old):.3f} of it; save "
                  + ", ".join(f"p{p} {self.added(p, new, old):+.1f} ms"
                              for p in (50, 95, 99)) + "; end to end "
                  + ", ".join(f"{load} p50 {self.e2e_at(50, load, new):.1f} vs "
                              f"{self.e2e_at(50, load, old):.1f} ms"
                              for load in ("sequential", "under load")))


def spread(values: list[float]) -> str:
    return f"{percentile(values, 50):.1f} / {percentile(values, 95):.1f}"


STATE_NAMES = {"off": "inactive", "on": "active", "before": "before"}


class Goals:
    """Issue targets of end-to-end time per server (ms)."""

    def __init__(self, p50: float, p99: float) -> None:
        self.p50, self.p99 = p50, p99


GOALS = {"php-s": Goals(60, 200), "php-fpm": Goals(40, 150)}


def summary(servers: list[tuple[str, str, Figures]]) -> None:
    """Every server's figures side by side (and the plugin before, with --before), with the
    targets and whether each is met; ``servers``: (label, kind, figures) each."""
    def cell(value: float, goal: float | None, fmt: str, unit: str = "",
             at_least: bool = False) -> str:
        if goal is None:
            return f"{value:{fmt}}{unit}"
        met = value >= goal if at_least else value <= goal
        return f"{value:{fmt}}{unit} ({'met' if met else 'NOT met'})"

    columns = [(Column(label, kind, figures), state)
               for label, kind, figures in servers for state in figures.e2e]
    print("\n== summary (targets: throughput >= 0.95, added <= 2 ms median and <= 5 ms p95, "
          "worst <= +100 ms, end to end p50/p99 <= 60/200 ms under php -S, 40/150 under FPM, "
          "apply >= 0.80 of wp_insert_user) ==")
    print("| figure | " + " | ".join(
        s.label + ("" if state == "on" else f" (plugin {STATE_NAMES[state]})")
        for s, state in columns) + " |")
    print("|---|" + "---|" * len(columns))
    rows: list[tuple[str, list[str]]] = [
        ("site throughput, with / without", [
            cell(s.figures.throughput(st), 0.95, ".3f", at_least=True) for s, st in columns]),
        *((f"added time per save, p{p}", [cell(s.figures.added(p, st), goal, "+.1f", " ms")
                                          for s, st in columns])
          for p, goal in ((50, 2.0), (95, 5.0), (99, None))),
        *((f"added time per save, p{p}, saves {PAUSE:g} s apart", [
            cell(s.figures.added(p, st, paced=True), goal, "+.1f", " ms") for s, st in columns])
          for p, goal in ((50, 2.0), (95, 5.0), (99, None))),
        ("worst request over its round's worst without", [
            cell(s.figures.most_over(st), 100, "+.0f", " ms") for s, st in columns]),
        ("site a's own CPU per create (web server + database), with / without", [
            f"{s.figures.site_cpu_ratio(st):.3f}" for s, st in columns]),
        ("the relay's CPU per create (and nginx in front of it under FPM)", [
            f"{s.figures.cpu_per_create('relay', st):.1f} ms" for s, st in columns])]
    for load in ("sequential", "under load"):
        for p in (50, 95, 99):
            rows.append((f"end to end, {load}, p{p}", [cell(
                s.figures.e2e_at(p, load, st),
                {50: GOALS[s.kind].p50, 99: GOALS[s.kind].p99}.get(p), ".1f", " ms")
                for s, st in columns]))
    rows.append(("apply rate / wp_insert_user()", [
        cell(s.figures.apply[1] / s.figures.apply[0], 0.8, ".2f", at_least=True)
        + f": {s.figures.apply[1]:.0f} / {s.figures.apply[0]:.0f} users/s"
        if s.figures.apply and st == "on" else "-" for s, st in columns]))
    for name, cells in rows:
        print(f"| {name} | " + " | ".join(cells) + " |")
