"""`bratskeras bench`: speed of the models and the input pipeline on this machine."""

import click

from bratskeras.cli.quiet import needs_tensorflow


@click.command("bench")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quick", is_flag=True, help="Tiny shapes, one repetition: checks the benchmark runs.")
@needs_tensorflow
def bench(as_json, quick):
    """Measure model and pipeline speed against this machine's matmul limit."""
    from bratskeras.bench import benchmark

    progress = None if as_json else (lambda message: click.echo(f"measuring {message} ...", err=True))
    report = benchmark.run_benchmark(quick=quick, progress=progress)
    click.echo(benchmark.report_json(report) if as_json else benchmark.format_report(report))


COMMANDS = [bench]
