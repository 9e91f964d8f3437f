"""The checks of a command line against the settings it gives: a setting that the command
would not use (an augmentation setting with --no-augment, a penalty or group count no variant
reads) is refused; a swept setting that repeats runs, a flag that a --param overrides, or a
ghost batch as large as the batch gets a one-line warning on stderr.

The checks of what was given take ``given``: the config keys whose flags the command line names
(``normlab.cli`` parses them), so that a default is never mistaken for a choice. The ghost-batch
warning reads the checked configs that will train instead, as a default size matters there too.
"""

from __future__ import annotations

import argparse
import sys
from typing import Iterable

from normlab.cli_flags import flag_name
from normlab.config import Config
from normlab.errors import ConfigError, NormlabError
from normlab.variants import VARIANT_SETTINGS, settings_read


def check_augmentation(given: set[str], args: argparse.Namespace, swept) -> None:
    """--rotate, --translate or --clean-fraction, given or swept (``swept``: the swept settings'
    names), with --no-augment set what it turns off: refused, unless --param sweeps augment."""
    if args.augment or "augment" in swept:
        return
    unused = sorted((given | set(swept)) & {"rotate", "translate", "clean_fraction"})
    if unused:
        verb = "set" if len(unused) > 1 else "sets"
        raise NormlabError(f"{', '.join(map(flag_name, unused))} {verb} the augmentation that "
                           "--no-augment turns off; drop one or the other")


def check_unused(given: set[str], args: argparse.Namespace, params=()) -> None:
    """--l1, --l2, --groups or --ghost-batch, given or swept (``params``: the sweep's Params),
    that no variant reads (see :func:`normlab.variants.settings_read`): refused, as they would
    change nothing. A swept one with several values that only some variants read: a one-line
    warning on stderr (the sweep still runs), as those variants' runs repeat alike."""
    specs = args.variants.split(",") if args.command in ("study", "sweep") else [args.variant]
    try:
        reads = {s.strip(): settings_read(s) for s in specs}
    except ConfigError:
        return   # a bad variant is reported, with its fix, by the config's own check
    swept = {p.field: f"--param {p.name}" for p in params}
    unused = sorted((given | set(swept)) & (VARIANT_SETTINGS - set().union(*reads.values())))
    if unused:
        flags = ", ".join(swept.get(k) or flag_name(k) for k in unused)
        one = len(unused) == 1
        which = f"--variant {args.variant}" if args.command == "train" else f"--variants {args.variants}"
        raise NormlabError(f"{flags} {'is' if one else 'are'} read by no variant of {which} "
                           "(--l1 and --l2 by a bare +l1 or +l2, as in bn+l1; --groups by gn; "
                           f"--ghost-batch by gbn); drop {flags}, or add a variant that reads "
                           f"{'it' if one else 'them'}")
    for p in params:
        deaf = [s for s, read in reads.items() if p.field in VARIANT_SETTINGS and p.field not in read]
        if deaf and len(p.values) > 1:
            one = len(deaf) == 1
            its, it = ("its", "it") if one else ("their", "them")
            print(f"normlab: warning: --param {p.name}: {', '.join(deaf)} "
                  f"{'does' if one else 'do'} not read it, so {its} runs repeat alike at each of "
                  f"its {len(p.values)} values; leave {it} out of this sweep and train {it} "
                  "separately to save that time", file=sys.stderr)


def warn_plain_ghost_batch(configs: Iterable[Config]) -> None:
    """A one-line warning on stderr where a variant reading --ghost-batch (gbn) gets a ghost
    batch at least as large as the batch: it then normalizes each batch as one virtual batch,
    which is plain BatchNorm, and its runs repeat bn's. ``configs``: the checked configs that
    will train (a study's, or every point's of a sweep), so each swept size is named as set."""
    ghostly, pairs = {}, {}
    for cfg in configs:
        reads = [v for v in cfg.variants if "ghost_batch" in settings_read(v)]
        if reads and cfg.ghost_batch >= cfg.batch_size:
            ghostly.update(dict.fromkeys(reads))
            pairs[cfg.ghost_batch, cfg.batch_size] = None
    if pairs:
        at = ", ".join(f"--ghost-batch {g} with --batch-size {b}" for g, b in pairs)
        print(f"normlab: warning: {', '.join(ghostly)} at {at} normalizes each batch as one "
              "virtual batch, which is plain BatchNorm (bn); give a --ghost-batch below the "
              "batch size to train with ghost batches", file=sys.stderr)


def warn_overridden(given: set[str], spec) -> None:
    """A one-line warning on stderr for a flag given beside a --param that sweeps the same
    setting: every point sets its own value, so the flag's only effect is the base config that
    sweep.json records (kept: pinning the base documents the settings of its time). With
    --scale-lr, --batch-size stays meaningful: the learning rate scales from it."""
    swept = {p.field: p.name for p in spec.params}
    if spec.scale_lr:
        swept.pop("batch_size", None)
    both = sorted(given & set(swept))
    if both:
        flags = ", ".join(flag_name(k) for k in both)
        params = ", ".join(f"--param {swept[k]}" for k in both)
        print(f"normlab: warning: {flags} {'is' if len(both) == 1 else 'are'} also swept by "
              f"{params}: every point sets its own, and {flags} only sets the base that "
              "sweep.json records", file=sys.stderr)
