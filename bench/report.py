"""The report: a markdown section (tables of median and min-max, machine, versions, commands, configurations)
and a PNG chart. The section replaces what lies between two markers in docs/benchmarks.md, so the hand-written
parts of that page (method, profile findings) stay as they are."""

from __future__ import annotations

from pathlib import Path

from bench.results import Results, Sample, fmt

START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"

#: Columns of the main table: metric key -> header.
COLUMNS = {
    "enqueue_one": "enqueue 1-by-1 (tasks/s)",
    "enqueue_bulk": "enqueue bulk (tasks/s)",
    "noop_drain": "noop drain (tasks/s)",
    "http_c100": "HTTP c=100 (tasks/s)",
    "http_c500": "HTTP c=500 (tasks/s)",
    "latency_p50": "latency p50 (ms)",
    "latency_p99": "latency p99 (ms)",
    "api_single": "API POST 1 task (tasks/s)",
    "api_batch": "API POST 1,000 tasks (tasks/s)",
}

#: Columns of the scaling CPU table.
SCALING_COLUMNS = {
    "noop_drain": "noop drain (tasks/s)",
    "cpu_worker_us": "GoPherQ processes CPU (µs/task)",
    "cpu_redis_us": "redis-server CPU (µs/task)",
}


def main_columns(results: Results) -> dict[str, str]:
    """COLUMNS, plus an HTTP column for any other concurrency measured (the smoke run's)."""
    columns = dict(COLUMNS)
    for metrics in results.table.values():
        for key in metrics:
            if key.startswith("http_c") and key not in columns:
                columns[key] = f"HTTP c={key[6:]} (tasks/s)"
    http = sorted((k for k in columns if k.startswith("http_c")), key=lambda k: int(k[6:]))
    order = ["enqueue_one", "enqueue_bulk", "noop_drain", *http]
    return {key: columns[key] for key in order + [k for k in columns if k not in order]}


def table(rows: dict[str, dict[str, Sample]], columns: dict[str, str], first: str) -> list[str]:
    used = [key for key in columns if any(key in metrics for metrics in rows.values())]
    lines = [f"| {first} | " + " | ".join(columns[key] for key in used) + " |"]
    lines.append("|---|" + "---:|" * len(used))
    for name, metrics in rows.items():
        cells = [metrics[key].cell() if key in metrics else "—" for key in used]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def best_peer(results: Results, metric: str, exclude: str = "GoPherQ") -> tuple[str, float] | None:
    found = [(name, m[metric].median) for name, m in results.table.items() if metric in m and exclude not in name]
    return max(found, key=lambda item: item[1]) if found else None


def targets(results: Results) -> list[str]:
    """The issue's targets, each with the measured figure and whether it is met."""
    rows: list[str] = ["| target | measured | met |", "|---|---|:-:|"]

    def add(name: str, measured: str, met: bool | None) -> None:
        rows.append(f"| {name} | {measured} | {'—' if met is None else ('yes' if met else 'no')} |")

    gq = results.table.get("GoPherQ", {})
    if "noop_drain" in gq:
        rate = gq["noop_drain"].median
        add("noop drain >= 10,000 tasks/s", f"{fmt(rate)}/s", rate >= 10_000)
        peer = best_peer(results, "noop_drain")
        if peer:
            add(f"noop drain >= 4x fastest peer ({peer[0]})", f"{rate / peer[1]:.1f}x", rate >= 4 * peer[1])
    pairs = (
        ("GoPherQ", "GoPherQ client: GoPherQ's aiohttp transport"),
        ("GoPherQ (httpx transport)", "GoPherQ client: httpx (httpcore) transport"),
    )
    for system, ceiling_name in pairs:
        sample = results.table.get(system, {}).get("http_c100")
        if sample is None:
            continue
        rate = sample.median
        peer = best_peer(results, "http_c100")
        if peer:
            met = rate >= 3 * peer[1]
            add(f"{system}: HTTP c=100 >= 3x fastest peer ({peer[0]})", f"{rate / peer[1]:.1f}x", met)
        ceiling = results.ceilings.get(ceiling_name, {}).get("c=100")
        if ceiling:
            share = rate / ceiling.median
            add(f"{system}: HTTP c=100 >= 60 % of its client's ceiling ({ceiling_name})", f"{share:.0%}", share >= 0.6)
    if "enqueue_bulk" in gq:
        rate = gq["enqueue_bulk"].median
        add("bulk enqueue >= 50,000 tasks/s", f"{fmt(rate)}/s", rate >= 50_000)
    if "api_single" in gq:
        rate = gq["api_single"].median
        add("HTTP API: >= 5,000 single-task POSTs/s (one server process)", f"{fmt(rate)}/s", rate >= 5_000)
    if "api_batch" in gq:
        rate = gq["api_batch"].median
        add("HTTP API: >= 50,000 tasks/s in batches (one server process)", f"{fmt(rate)}/s", rate >= 50_000)
    if "latency_p50" in gq:
        p50 = gq["latency_p50"].median
        add("p50 enqueue-to-start < 2 ms (at 500/s)", f"{p50:.2f} ms", p50 < 2)
    if len(results.soak) >= 2:
        first, last = results.soak[0][1], results.soak[-1][1]
        growth = last / first - 1
        add(
            f"soak RSS after {results.soak[-1][0]:,} within 10 % of after {results.soak[0][0]:,}",
            f"{first:.1f} -> {last:.1f} MiB ({growth:+.1%})",
            abs(growth) <= 0.10,
        )
    one = results.table.get("GoPherQ x1 process (scaling)", {}).get("noop_drain")
    off = results.table.get("GoPherQ x1, stream off", {}).get("noop_drain")
    if one and off:
        cost = 1 - one.median / off.median
        add("noop drain with the stream on within 3 % of the stream off", f"{cost:+.1%} slower", cost <= 0.03)
    two = results.table.get("GoPherQ x2 processes", {}).get("noop_drain")
    if one and two:
        ratio = two.median / one.median
        add("2 processes >= 1.6x one", f"{ratio:.2f}x", ratio >= 1.6)
        bound = two_core_bound(results)
        if bound is not None:
            w, r, limit = bound
            text = f"{limit:.2f}x (w = {w:.1f} µs, r = {r:.1f} µs per task, from the 1-process run)"
            add("2 processes: most a 2-core machine allows, 2w / (w + r)", text, None)
    return rows


def two_core_bound(results: Results) -> tuple[float, float, float] | None:
    """(w, r, 2w / (w + r)): the speed-up two worker processes can reach at most when they share two cores with
    redis-server. One process runs at best 1/w tasks/s (w = its CPU per task); two saturate both cores at
    2 / (w + r) (r = redis-server's CPU per task), so the ratio cannot pass 2w / (w + r)."""
    metrics = results.table.get("GoPherQ x1 process (scaling)", {})
    if "cpu_worker_us" not in metrics or "cpu_redis_us" not in metrics:
        return None
    w, r = metrics["cpu_worker_us"].median, metrics["cpu_redis_us"].median
    return w, r, 2 * w / (w + r)


def render(results: Results, chart: str | None) -> str:
    out = [START, "", f"Mode `{results.mode}`, command `{results.command}`.", ""]
    out += [f"- {key}: {value}" for key, value in results.machine.items()]
    out += ["", "Sizes: " + ", ".join(f"{key} {value}" for key, value in results.sizes.items()) + ".", ""]
    out += ["### Results (median, min-max in brackets)", ""]
    out += table(results.table, main_columns(results), "system")
    if chart:
        out += ["", f"![benchmark chart]({chart})"]
    out += ["", "### Targets (issues 5 and 10)", "", *targets(results)]
    if results.ceilings:
        columns = {key: key for metrics in results.ceilings.values() for key in metrics}
        out += ["", "### Ceilings (no queue; requests or operations per second)", ""]
        out += table(results.ceilings, columns, "limit")
    scaling = {name: m for name, m in results.table.items() if "cpu_worker_us" in m}
    if scaling:
        out += ["", "### Scaling: where the CPU goes (per task)", ""]
        out += table(scaling, SCALING_COLUMNS, "run")
    if results.soak:
        out += ["", "### Soak: GoPherQ worker RSS", "", "| tasks processed | RSS (MiB) | tasks/s (segment) |"]
        out += ["|---:|---:|---:|"]
        out += [f"| {n:,} | {rss:.1f} | {fmt(rate) if rate else '—'} |" for n, rss, rate in results.soak]
    if results.profile:
        out += ["", "### Profile of the GoPherQ noop drain (py-spy, worker process)", "", results.profile_note, ""]
        out += ["| function | self % | inclusive % | self µs/task |", "|---|---:|---:|---:|"]
        out += [f"| `{name}` | {own:.1f} | {incl:.1f} | {per:.1f} |" for name, own, incl, per in results.profile]
    if results.profile_http:
        out += ["", "### Profile of the GoPherQ HTTP drain by layer (py-spy, worker process)", ""]
        out += [results.profile_http_note, "", "| layer | CPU % | µs/task |", "|---|---:|---:|"]
        out += [f"| {name} | {share:.1f} | {per:.1f} |" for name, share, per in results.profile_http]
    out += ["", "### Worker configurations", "", "| system | workload | configuration |", "|---|---|---|"]
    out += [f"| {system} | {workload} | {text} |" for system, workload, text in results.configs]
    out += ["", "### Versions", ""]
    out += [f"- {name}: {version}" for name, version in results.versions.items()]
    if results.errors:
        out += ["", "### Runs that failed", ""]
        out += [f"- {error}" for error in results.errors]
    out += ["", END]
    return "\n".join(out) + "\n"


def write_markdown(results: Results, path: Path, chart: str | None, template: str) -> None:
    section = render(results, chart)
    text = path.read_text() if path.exists() else template
    if START in text and END in text:
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_chart(results: Results, path: Path) -> bool:
    """Bar charts of the throughput columns (median with min-max whiskers); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    columns = main_columns(results)
    wanted = ["noop_drain", *(k for k in columns if k.startswith("http_c")), "enqueue_one", "enqueue_bulk"]
    metrics = [key for key in wanted if any(key in m for m in results.table.values())]
    if not metrics:
        return False
    fig, axes = plt.subplots(len(metrics), 1, figsize=(8, 2.2 * len(metrics) + 0.5), squeeze=False)
    for ax, key in zip(axes[:, 0], metrics, strict=True):
        names = [name for name, m in results.table.items() if key in m]
        samples = [results.table[name][key] for name in names]
        medians = [s.median for s in samples]
        errors = [[s.median - s.low for s in samples], [s.high - s.median for s in samples]]
        colors = ["#2a7ab9" if name.startswith("GoPherQ") else "#9a9a9a" for name in names]
        ax.barh(names, medians, xerr=errors, color=colors, capsize=3)
        ax.invert_yaxis()
        ax.set_title(columns[key], fontsize=10)
        ax.tick_params(labelsize=8)
        for y, value in enumerate(medians):
            ax.text(value, y, f" {fmt(value)}", va="center", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
