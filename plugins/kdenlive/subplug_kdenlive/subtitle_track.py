"""Where subtitles go in a project, in the form its Kdenlive version reads.

Read in KDE/kdenlive (``src/doc/kdenlivedoc.cpp``, ``src/bin/model/subtitlemodel.cpp``):

* The subtitle track is an ``avfilter.subtitles`` filter with ``internal_added=237`` on
  the timeline tractor; its ``av.filename`` is the file MLT burns in when rendering.
* ``KdenliveDoc::subTitlePath(uuid, ix, final)``: the saved file is next to the project,
  named after it: ``NAME.kdenlive`` + the sequence UUID (only for a sequence other than
  the document's main one) + ``-ix`` (only for subtitle index > 0) + the extension:
  ``.srt`` up to 24.05, ``.ass`` from 24.08 on.
* From 24.08 a sequence can have several subtitle tracks. They are listed in the
  sequence property ``subtitlesList`` (saved as ``kdenlive:sequenceproperties.
  subtitlesList`` on the sequence tractor): a JSON array of ``{"name", "id", "file"}``
  objects (``KdenliveDoc::JSonToSubtitleList``, ``SubtitleModel::subtitlesFilesToJson``).
  Track 0 is the one shown unless ``activeSubtitleIndex`` says otherwise.

So subplug writes, for Kdenlive 22.x–24.05 (one subtitle track): ``NAME.kdenlive.srt``
with both languages in each cue; for 24.08 and later: three ASS tracks — ``EN + MN``
(index 0, shown and rendered), ``English`` (1) and ``Mongolian`` (2).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from subplug.errors import SubplugError
from subplug.types import StyleOptions, Track

from subplug_kdenlive import bilingual, writers
from subplug_kdenlive.project import Edit, Element, KdenliveProject, property_text

#: First Kdenlive version whose subtitle tracks are ASS files listed in ``subtitlesList``.
MULTI_TRACK_VERSION = (24, 8)
#: Kdenlive marks filters it manages itself with this value.
INTERNAL_ADDED = "237"
SUBTITLE_SERVICE = "avfilter.subtitles"
SUBTITLES_LIST = "kdenlive:sequenceproperties.subtitlesList"
#: Our mark on the filter we add, so a second run replaces our own track only.
MARK = "subplug:generated"
LANGUAGE_NAMES = {"en": "English", "mn": "Mongolian"}


class Layout(str, enum.Enum):
    """How a Kdenlive version stores subtitles."""

    SRT = "srt"
    """22.x–24.05: one track, ``NAME.kdenlive.srt``."""
    ASS = "ass"
    """24.08+: several tracks, ``NAME.kdenlive[-N].ass`` + ``subtitlesList``."""


def choose_layout(version: tuple[int, ...] | None) -> Layout:
    """The layout the Kdenlive that saved a project reads. Unknown version: SRT, the
    older form (a project without ``kdenliveversion`` predates the property)."""
    if version is not None and version[:2] >= MULTI_TRACK_VERSION:
        return Layout.ASS
    return Layout.SRT


@dataclass(frozen=True)
class SubtitleFile:
    """One subtitle file of the plan."""

    path: Path
    index: int
    """Kdenlive's subtitle index (0 is shown by default)."""
    name: str
    """The track name Kdenlive shows (ASS layout)."""
    langs: tuple[str, ...]


@dataclass(frozen=True)
class SubtitlePlan:
    """What ``apply`` writes into one project."""

    layout: Layout
    timeline_id: str
    files: tuple[SubtitleFile, ...]
    langs: tuple[str, ...]

    @property
    def active(self) -> SubtitleFile:
        return self.files[0]


def subtitle_path(project: KdenliveProject, timeline: Element, index: int, layout: Layout) -> Path:
    """``KdenliveDoc::subTitlePath`` for a saved project."""
    name = project.path.name
    uuid = timeline.id or ""
    if project.has_sequences and uuid and uuid != (project.document_uuid or uuid):
        name += uuid
    if index > 0:
        name += f"-{index}"
    return project.path.resolve().parent / f"{name}.{layout.value}"


def plan(
    project: KdenliveProject, langs: Sequence[str], layout: Layout | None = None
) -> SubtitlePlan:
    """The files and track names for ``langs`` in ``project``."""
    layout = layout or choose_layout(project.kdenlive_version)
    timeline = project.timeline()
    langs = tuple(langs)
    both = " + ".join(lang.upper() for lang in langs)
    if layout is Layout.SRT or len(langs) == 1:
        names = [(langs, both if len(langs) > 1 else LANGUAGE_NAMES.get(langs[0], langs[0]))]
    else:
        names = [(langs, both)] + [((lang,), LANGUAGE_NAMES.get(lang, lang)) for lang in langs]
    files = tuple(
        SubtitleFile(subtitle_path(project, timeline, index, layout), index, name, group)
        for index, (group, name) in enumerate(names)
    )
    return SubtitlePlan(layout, timeline.id or "", files, langs)


def render(
    subtitle_plan: SubtitlePlan,
    tracks: Mapping[str, Track],
    project: KdenliveProject,
    style: StyleOptions | None = None,
) -> dict[Path, str]:
    """The text of every file of the plan."""
    style = style or StyleOptions()
    out: dict[Path, str] = {}
    for item in subtitle_plan.files:
        if subtitle_plan.layout is Layout.SRT:
            order = sorted(item.langs, key=lambda lang: lang == style.bottom)
            out[item.path] = writers.render_srt(bilingual.merge_tracks(tracks, order))
        else:
            out[item.path] = writers.render_ass(
                tracks, item.langs, project.profile, style, title=project.path
            )
    return out


# ------------------------------------------------------------------- the project


def subtitle_filters(project: KdenliveProject, timeline: Element) -> list[Element]:
    """``avfilter.subtitles`` filters directly on ``timeline``."""
    return [
        f
        for f in project.children(timeline, "filter")
        if project.properties(f).get("mlt_service") == SUBTITLE_SERVICE
    ]


def existing_subtitles(project: KdenliveProject, timeline: Element) -> list[str]:
    """Subtitle tracks on ``timeline`` that subplug did not make (what ``--force``
    replaces)."""
    filters = subtitle_filters(project, timeline)
    ours = any(MARK in project.properties(f) for f in filters)
    found = [
        f"a subtitle track ({project.properties(f).get('av.filename') or 'no file'})"
        for f in filters
        if MARK not in project.properties(f)
    ]
    listed = project.property_element(timeline, SUBTITLES_LIST)
    if listed is not None and not ours and not found:
        names = [str(entry.get("name", "?")) for entry in _json_list(listed.text)]
        if names:
            found.append(f"subtitle tracks {', '.join(names)}")
    return found


def _json_list(text: str) -> list[dict]:
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def subtitles_list_json(subtitle_plan: SubtitlePlan) -> str:
    """The ``subtitlesList`` value as Qt's ``QJsonDocument::toJson`` writes it
    (indented by 4, keys sorted, trailing newline)."""
    entries = [
        {"file": str(item.path), "id": item.index, "name": item.name}
        for item in subtitle_plan.files
    ]
    return json.dumps(entries, indent=4, sort_keys=True, ensure_ascii=False) + "\n"


def next_filter_id(project: KdenliveProject) -> str:
    """An unused ``filterN`` id."""
    used = {e.id for e in project.elements if e.id}
    numbers = [int(m.group(1)) for e in used if (m := re.fullmatch(r"filter(\d+)", e or ""))]
    candidate = max(numbers, default=-1) + 1
    while f"filter{candidate}" in used:
        candidate += 1
    return f"filter{candidate}"


def edits(
    project: KdenliveProject,
    subtitle_plan: SubtitlePlan,
    *,
    version: str,
    force: bool = False,
) -> list[Edit]:
    """The changes that put ``subtitle_plan``'s track into ``project``.

    Replaces a subtitle filter subplug added earlier; a subtitle track the user made is
    an error unless ``force`` (then it is replaced too)."""
    timeline = project.by_id(subtitle_plan.timeline_id) or project.timeline()
    others = existing_subtitles(project, timeline)
    if others and not force:
        raise SubplugError(
            "kdenlive-has-subtitles",
            f"{project.path.name} already has subtitles: {'; '.join(others)}. "
            "subplug does not replace subtitles it did not make.",
            "Delete that subtitle track in Kdenlive first, or run again with --force to "
            "replace it (the project and any subtitle file it replaces are backed up).",
        )
    changes: list[Edit] = []
    old_filters = subtitle_filters(project, timeline)
    for element in old_filters:
        changes.append(_removal(project, element))
    indent = project.child_indent(timeline)
    step = _indent_step(project, timeline, indent)
    properties = [
        ("mlt_service", SUBTITLE_SERVICE),
        ("internal_added", INTERNAL_ADDED),
        ("av.filename", str(subtitle_plan.active.path)),
    ]
    if project.has_sequences:
        properties.append(("av.alpha", "1"))
    properties.append((MARK, version))
    body = "".join(f"\n{indent}{step}{property_text(k, v)}" for k, v in properties)
    filter_id = old_filters[0].id if old_filters and old_filters[0].id else next_filter_id(project)
    filter_text = f'\n{indent}<filter id="{filter_id}">{body}\n{indent}</filter>'
    kids = list(project.children(timeline))
    kept = [k for k in kids if k not in old_filters]
    if timeline.inner_start == timeline.end:
        raise SubplugError(
            "kdenlive-no-timeline",
            f"{project.path}: the timeline tractor {timeline.id!r} is empty.",
            "Open the project in Kdenlive, add a clip to the timeline and save it.",
        )
    anchor = kept[-1].end if kept else timeline.inner_start
    changes.append(Edit(anchor, anchor, filter_text))
    if subtitle_plan.layout is Layout.ASS:
        changes.append(
            _set_property(
                project, timeline, SUBTITLES_LIST, subtitles_list_json(subtitle_plan), indent
            )
        )
    return changes


def _indent_step(project: KdenliveProject, timeline: Element, indent: str) -> str:
    """The extra indentation of a property inside a filter, as the file does it."""
    for element in project.children(timeline, "filter"):
        props = list(project.children(element, "property"))
        if props:
            inner = project.indent_of(props[0])
            if inner.startswith(indent) and len(inner) > len(indent):
                return inner[len(indent) :]
    return " "


def _removal(project: KdenliveProject, element: Element) -> Edit:
    """Remove ``element`` with the line break and indentation before it."""
    start = element.start
    line_start = project.data.rfind(b"\n", 0, start)
    if line_start >= 0 and project.data[line_start + 1 : start].strip() == b"":
        start = line_start
    return Edit(start, element.end, "")


def _set_property(
    project: KdenliveProject, owner: Element, name: str, value: str, indent: str
) -> Edit:
    existing = project.property_element(owner, name)
    text = property_text(name, value)
    if existing is not None:
        return Edit(existing.start, existing.end, text)
    props = list(project.children(owner, "property"))
    anchor = props[-1].end if props else owner.inner_start
    return Edit(anchor, anchor, f"\n{indent}{text}")
