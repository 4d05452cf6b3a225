"""Scenario results for people (a terminal report) and for CI (JUnit XML)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path

from runtime.errors import Problem
from runtime.scenario_run import Mismatch, ScenarioResult


def describe(mismatch: Mismatch) -> list[str]:
    lines = [
        f"    at {mismatch.where}" + (f", caller said: {mismatch.said!r}" if mismatch.said else "")
    ]
    lines.append(f"      expected: {mismatch.expected}")
    lines.append(f"      got:      {mismatch.got}")
    return lines


def print_result(result: ScenarioResult, out: Callable[[str], None]) -> None:
    status = "PASS" if result.passed else "FAIL"
    out(f"  {status}  {result.bot_id}: {result.name} ({result.seconds:.2f} s)")
    for mismatch in result.mismatches:
        for line in describe(mismatch):
            out(line)
    for note in result.skipped:
        out(f"    skipped {note}")


def summary(results: Sequence[ScenarioResult], problems: Sequence[Problem]) -> str:
    failed = sum(not r.passed for r in results)
    seconds = sum(r.seconds for r in results)
    text = f"{len(results) - failed} passed, {failed} failed"
    if problems:
        text += f", {len(problems)} file problem(s)"
    return f"{text} in {seconds:.2f} s"


def write_junit(path: Path, results: Sequence[ScenarioResult], problems: Sequence[Problem]) -> None:
    """One <testsuite> per bot, one <testcase> per scenario; a broken scenario file is a
    test case in error, so CI shows it instead of silently running fewer tests."""
    suites: dict[str, list[ScenarioResult]] = {}
    for result in results:
        suites.setdefault(result.bot_id, []).append(result)
    root = ET.Element("testsuites", name="dialplan scenarios")
    for bot_id, bot_results in suites.items():
        suite = ET.SubElement(
            root,
            "testsuite",
            name=bot_id,
            tests=str(len(bot_results)),
            failures=str(sum(not r.passed for r in bot_results)),
            errors="0",
            skipped="0",
            time=f"{sum(r.seconds for r in bot_results):.3f}",
        )
        for result in bot_results:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"scenarios.{bot_id}",
                name=result.name,
                time=f"{result.seconds:.3f}",
            )
            if not result.passed:
                first = result.mismatches[0]
                failure = ET.SubElement(
                    case, "failure", message=f"{first.where}: expected {first.expected}"
                )
                failure.text = "\n".join(
                    line for mismatch in result.mismatches for line in describe(mismatch)
                )
            if result.skipped:
                ET.SubElement(case, "system-out").text = "\n".join(
                    f"skipped {note}" for note in result.skipped
                )
    if problems:
        suite = ET.SubElement(
            root,
            "testsuite",
            name="scenario files",
            tests=str(len(problems)),
            failures="0",
            errors=str(len(problems)),
            skipped="0",
            time="0",
        )
        for problem in problems:
            case = ET.SubElement(
                suite, "testcase", classname="scenarios.files", name=str(problem.file)
            )
            ET.SubElement(case, "error", message=problem.message).text = str(problem)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
