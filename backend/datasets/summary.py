"""What an accepted upload looks like, and what a person should know about it.

Warnings are sentences for the user, each saying what was seen and why it
matters for the curves; none of them refuses the upload.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

from backend.datasets.errors import few, plural, show
from backend.datasets.layout import ImageEntry

IMBALANCE_RATIO = 3.0
TINY_CLASS = 10


@dataclass
class IngestSummary:
    num_images: int
    classes: list[dict]  # [{"name", "count"}] in label order
    image_shapes: list[dict]  # [{"height", "width", "mode", "count"}], most common first
    warnings: list[str] = field(default_factory=list)


def summarize(
    classes: list[str],
    images: list[ImageEntry],
    unreadable: list[tuple[str, str]],
    non_images: list[str],
    repeated: Sequence[str] = (),
) -> IngestSummary:
    """``unreadable`` holds (entry name, reason); ``non_images`` and ``repeated``
    (entries named like an earlier one) entry names."""
    counts = Counter(image.label for image in images)
    shapes = Counter((image.height, image.width, image.mode) for image in images)
    warnings: list[str] = []
    if unreadable:
        listed = few([f"{show(name)} ({reason})" for name, reason in unreadable])
        warnings.append(f"skipped {plural(len(unreadable), 'unreadable image')}: {listed}")
    if non_images:
        listed = few([show(name) for name in non_images])
        what = "is not an image" if len(non_images) == 1 else "are not images"
        warnings.append(f"skipped {plural(len(non_images), 'file')} that {what}: {listed}")
    if repeated:
        listed = few([show(name) for name in repeated])
        has = (
            "has the name of an earlier one" if len(repeated) == 1 else "have names of earlier ones"
        )
        warnings.append(
            f"{plural(len(repeated), 'entry', 'entries')} {has}: {listed}; the archive was "
            "probably added to twice, and each copy counts on its own"
        )
    sized = [counts[label] for label in range(len(classes))]
    warnings += _balance(classes, sized)
    warnings += _lookalikes(classes)
    warnings += _mixtures(shapes)
    warnings += _copies(classes, images)
    warnings += _shared(classes, images)
    return IngestSummary(
        num_images=len(images),
        classes=[{"name": name, "count": size} for name, size in zip(classes, sized, strict=True)],
        image_shapes=[
            {"height": height, "width": width, "mode": mode, "count": count}
            for (height, width, mode), count in shapes.most_common()
        ],
        warnings=warnings,
    )


def _balance(classes: list[str], sizes: list[int]) -> list[str]:
    warnings = []
    largest = max(range(len(sizes)), key=sizes.__getitem__)
    smallest = min(range(len(sizes)), key=sizes.__getitem__)
    ratio = sizes[largest] / max(sizes[smallest], 1)
    if ratio > IMBALANCE_RATIO:
        warnings.append(
            f"classes are imbalanced: {show(classes[largest])} has {sizes[largest]} images, "
            f"{show(classes[smallest])} has {sizes[smallest]} ({ratio:.1f}×); accuracy will "
            "favour the large classes and a stratified split keeps few of the small ones"
        )
    tiny = [
        f"{show(name)} ({size})"
        for name, size in zip(classes, sizes, strict=True)
        if size < TINY_CLASS
    ]
    if tiny:
        warnings.append(
            f"{plural(len(tiny), 'class', 'classes')} with fewer than {TINY_CLASS} images: "
            f"{few(tiny, 5)}; their validation numbers will be noise"
        )
    return warnings


def _lookalikes(classes: list[str]) -> list[str]:
    groups: dict[str, list[str]] = {}
    for name in classes:
        groups.setdefault(name.casefold(), []).append(name)
    clashes = [
        " and ".join(show(name) for name in group) for group in groups.values() if len(group) > 1
    ]
    if not clashes:
        return []
    return [
        f"class folders differ only in case: {few(clashes)}; they are separate classes here, "
        "though macOS and Windows would see one folder"
    ]


def _mixtures(shapes: Counter[tuple[int, int, str]]) -> list[str]:
    warnings = []
    sizes: Counter[tuple[int, int]] = Counter()
    modes: Counter[str] = Counter()
    for (height, width, mode), count in shapes.items():
        sizes[(height, width)] += count
        modes[mode] += count
    if len(sizes) > 1:
        listed = few([f"{h}×{w} ({n})" for (h, w), n in sizes.most_common()])
        warnings.append(
            f"images come in {len(sizes)} sizes (height×width): {listed}; training resizes "
            "every image to the configured image_size, which distorts the others"
        )
    if len(modes) > 1:
        listed = few([f"{mode} ({n})" for mode, n in modes.most_common()], 5)
        warnings.append(
            f"images mix colour modes: {listed}; training converts all of them to the "
            "configured color_mode"
        )
    return warnings


def _copies(classes: list[str], images: list[ImageEntry]) -> list[str]:
    same: Counter[tuple[str, int]] = Counter((image.sha1, image.label) for image in images)
    extra: Counter[int] = Counter()
    for (_sha1, label), count in same.items():
        extra[label] += count - 1
    total = sum(extra.values())
    if not total:
        return []
    listed = few([f"{show(classes[label])} ({n})" for label, n in extra.most_common() if n])
    verb = "is an exact copy" if total == 1 else "are exact copies"
    return [
        f"{plural(total, 'image')} {verb} of another in the same class: {listed}; a copy "
        "can land in validation while its twin trains, which makes val_loss look better"
    ]


def _shared(classes: list[str], images: list[ImageEntry]) -> list[str]:
    labels_of: dict[str, set[int]] = {}
    for image in images:
        labels_of.setdefault(image.sha1, set()).add(image.label)
    pairs: Counter[tuple[int, int]] = Counter()
    shared = 0
    for labels in labels_of.values():
        if len(labels) > 1:
            shared += 1
            pairs.update(combinations(sorted(labels), 2))
    if not shared:
        return []
    listed = few(
        [
            f"{show(classes[a])} and {show(classes[b])} share {n}"
            for (a, b), n in pairs.most_common()
        ]
    )
    verb = "appears" if shared == 1 else "appear"
    return [
        f"{plural(shared, 'identical image')} {verb} in more than one class: {listed}; "
        "no model can tell those apart, and they leak from training into validation"
    ]
