"""`harness tasks`, `harness methods`, `harness recipes`: what can be named on the command line."""

from __future__ import annotations

import argparse

from harness.core.method import METHODS
from harness.data.recipes import describe_recipes
from harness.tasks.catalog import BENCHMARKS, item_count


def add(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("tasks", help="list benchmarks, protocols, languages and item counts").set_defaults(func=tasks)
    sub.add_parser("methods", help="list the registered methods").set_defaults(func=methods)
    sub.add_parser("recipes", help="list the training-data recipes").set_defaults(func=recipes)


def tasks(args: argparse.Namespace) -> int:
    print(f"{'benchmark':<12} {'protocols':<10} {'metric':<14} languages (items)")
    for b in BENCHMARKS.values():
        metrics = "/".join(dict.fromkeys(b.metrics[p] for p in b.protocols))
        langs = " ".join(f"{lang}({item_count(b.name, lang)})" for lang in b.languages)
        print(f"{b.name:<12} {','.join(b.protocols):<10} {metrics:<14} {langs}")
    print("\nNames: <benchmark> (paper protocol), <benchmark>_<protocol>, <benchmark>_<protocol>_<lang>, all,")
    print("or any task lm-eval ships. Protocols: gen = chat template, greedy, <= 40 new tokens, answer read")
    print("from the text (the paper's); mc = options ranked by log-likelihood.")
    return 0


def methods(args: argparse.Namespace) -> int:
    for name in METHODS:
        cls = METHODS.get(name)
        print(f"{name:<10} {cls.description}")
        if cls.defaults:
            print(" " * 11 + "options: " + ", ".join(f"{k}={v}" for k, v in cls.defaults.items()))
    return 0


def recipes(args: argparse.Namespace) -> int:
    for name, text in describe_recipes().items():
        print(f"{name:<14} {text}")
    return 0
