"""A read-only model of a Kdenlive project (MLT XML) that can be edited byte-exactly.

The file is parsed with expat, keeping each element's byte span. Changes are
:class:`Edit` objects (replace bytes ``start:end`` with new text) applied to the
original bytes, so everything subplug does not touch — element order, attribute quoting,
whitespace, comments, the XML declaration — stays exactly as Kdenlive wrote it.

What Kdenlive puts where (read in KDE/kdenlive, see docs/kdenlive.md):

* the bin is the ``main_bin`` playlist; document properties are its
  ``kdenlive:docproperties.*`` properties (``kdenliveversion``, ``version``, ``uuid``);
* before sequences (document version < 1.1, Kdenlive < 24.02) the timeline is the main
  tractor, the last element of the file (MLT's root producer);
* with sequences (document version ≥ 1.1) each timeline is a tractor whose ``id`` is its
  UUID, and the last element is a tractor with ``kdenlive:projectTractor`` whose first
  track is the active sequence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from xml.parsers import expat

from subplug.errors import SubplugError

_DECLARED_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


@dataclass(frozen=True)
class Element:
    """One element of the file and where its bytes are."""

    index: int
    tag: str
    attrs: Mapping[str, str]
    start: int
    """Offset of ``<`` of the start tag."""
    end: int
    """Offset just after the ``>`` of the end tag (or of an empty-element tag)."""
    inner_start: int
    """Offset just after the start tag (equals ``end`` for ``<x/>``)."""
    inner_end: int
    """Offset of ``</`` of the end tag (equals ``end`` for ``<x/>``)."""
    parent: int | None
    children: tuple[int, ...]
    text: str
    """Character data directly inside the element (a property's value)."""

    @property
    def id(self) -> str | None:
        return self.attrs.get("id")


@dataclass(frozen=True)
class Edit:
    """Replace ``data[start:end]`` with ``text`` (``start == end`` inserts)."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Profile:
    """The project's video profile."""

    width: int
    height: int
    fps: Fraction


@dataclass(frozen=True)
class BinClip:
    """A clip in the project bin (``main_bin`` entry) with a file behind it."""

    clip_id: str
    """Kdenlive's clip id (``kdenlive:id``), what ``--clip`` takes."""
    name: str
    resource: Path
    producer_id: str
    service: str = ""
    """The MLT service (``avformat``, ``qimage``…); empty when the file does not say."""

    @property
    def has_sound(self) -> bool:
        """Whether the clip can have sound (not a still image)."""
        return not self.service.startswith(("qimage", "pixbuf"))


@dataclass(frozen=True)
class Placement:
    """Where a bin clip sits on the timeline, in frames."""

    position: int
    """First timeline frame of the entry."""
    clip_in: int
    """First frame of the clip that is used."""
    clip_out: int
    """Last frame of the clip that is used (inclusive, as MLT counts)."""


@dataclass(frozen=True)
class KdenliveProject:
    """A parsed project: its bytes and an index of its elements."""

    path: Path
    data: bytes
    elements: tuple[Element, ...] = field(repr=False)
    encoding: str = "utf-8"

    # ----------------------------------------------------------------- loading

    @classmethod
    def load(cls, path: Path) -> KdenliveProject:
        """Read and index ``path``; a file that is not a Kdenlive project is a
        :class:`SubplugError` (references ``kdenlive-*``)."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise SubplugError(
                "kdenlive-project-missing",
                f"There is no project file at {path}.",
                "Give the path of a .kdenlive file saved by Kdenlive.",
            ) from None
        except OSError as exc:
            raise SubplugError(
                "kdenlive-project-unreadable",
                f"Cannot read {path}: {exc.strerror}.",
                "Check that the file exists and that you may read it.",
            ) from exc
        return cls.parse(data, path)

    @classmethod
    def parse(cls, data: bytes, path: Path) -> KdenliveProject:
        """Index ``data`` (the bytes of ``path``) and check it is an MLT project."""
        match = _DECLARED_ENCODING.match(data)
        encoding = match.group(1).decode("ascii").lower() if match else "utf-8"
        _check_encoding(data, encoding, path)
        elements = _index(data, path)
        project = cls(Path(path), data, tuple(elements), encoding)
        project._check()
        return project

    def _check(self) -> None:
        root = self.elements[0]
        if root.tag != "mlt":
            raise SubplugError(
                "kdenlive-not-mlt",
                f"{self.path} is XML but not a Kdenlive project (its root element is "
                f"<{root.tag}>, not <mlt>).",
                "Give the .kdenlive file Kdenlive saves, not an export or another XML file.",
            )
        if not any(e.tag == "tractor" for e in self.children(root)):
            raise SubplugError(
                "kdenlive-no-timeline",
                f"{self.path} has no timeline (no <tractor> element); it may be damaged.",
                "Open it in Kdenlive and save it again, or restore a backup "
                "(Project > Open Backup File in Kdenlive).",
            )

    # ------------------------------------------------------------------ queries

    @property
    def root(self) -> Element:
        return self.elements[0]

    def children(self, element: Element, tag: str | None = None) -> Iterator[Element]:
        """Child elements of ``element`` (optionally only ``tag``)."""
        for index in element.children:
            child = self.elements[index]
            if tag is None or child.tag == tag:
                yield child

    def by_id(self, element_id: str) -> Element | None:
        """The top-level element with ``id`` (producers, playlists, tractors)."""
        return self._ids.get(element_id)

    @cached_property
    def _ids(self) -> dict[str, Element]:
        """Top-level elements by ``id`` (the first one, as before, when ids repeat)."""
        found: dict[str, Element] = {}
        for child in self.children(self.root):
            if child.id is not None:
                found.setdefault(child.id, child)
        return found

    def properties(self, element: Element) -> dict[str, str]:
        """``<property name=…>value</property>`` children as a dict (last one wins)."""
        return {p.attrs.get("name", ""): p.text for p in self.children(element, "property")}

    def property_element(self, element: Element, name: str) -> Element | None:
        """The ``<property name=name>`` child of ``element``, if any."""
        for prop in self.children(element, "property"):
            if prop.attrs.get("name") == name:
                return prop
        return None

    @property
    def main_bin(self) -> Element | None:
        return self.by_id("main_bin")

    @property
    def doc_properties(self) -> dict[str, str]:
        """``kdenlive:docproperties.X`` of the bin, keyed by ``X``."""
        if self.main_bin is None:
            return {}
        prefix = "kdenlive:docproperties."
        return {
            name[len(prefix) :]: value
            for name, value in self.properties(self.main_bin).items()
            if name.startswith(prefix)
        }

    @property
    def kdenlive_version(self) -> tuple[int, ...] | None:
        """The Kdenlive version that saved the file (``kdenliveversion``), e.g. (22, 12, 3)."""
        return parse_version(self.doc_properties.get("kdenliveversion", ""))

    @property
    def document_version(self) -> str | None:
        """The project file format version (``docproperties.version``), e.g. ``1.04``."""
        return self.doc_properties.get("version") or None

    @property
    def has_sequences(self) -> bool:
        """True for the multi-sequence format (a ``kdenlive:projectTractor`` exists)."""
        return self.project_tractor is not None

    @property
    def project_tractor(self) -> Element | None:
        for tractor in self.children(self.root, "tractor"):
            if self.properties(tractor).get("kdenlive:projectTractor") == "1":
                return tractor
        return None

    @property
    def document_uuid(self) -> str | None:
        return self.doc_properties.get("uuid") or None

    def timeline(self) -> Element:
        """The tractor holding the timeline subtitles belong to: the active sequence
        (first track of the project tractor) or, in older files, the main tractor."""
        project_tractor = self.project_tractor
        if project_tractor is not None:
            for track in self.children(project_tractor, "track"):
                sequence = self.by_id(track.attrs.get("producer", ""))
                if sequence is not None and sequence.tag == "tractor":
                    return sequence
            raise SubplugError(
                "kdenlive-no-timeline",
                f"{self.path}: the project tractor does not point to a sequence.",
                "Open the project in Kdenlive and save it again.",
            )
        tractors = list(self.children(self.root, "tractor"))
        return tractors[-1]

    @property
    def profile(self) -> Profile:
        """Frame size and rate (``<profile>``), 25 fps 1920×1080 when absent."""
        for element in self.children(self.root, "profile"):
            a = element.attrs
            try:
                fps = Fraction(int(a.get("frame_rate_num", 25)), int(a.get("frame_rate_den", 1)))
                return Profile(int(a.get("width", 1920)), int(a.get("height", 1080)), fps)
            except (ValueError, ZeroDivisionError):
                break
        return Profile(1920, 1080, Fraction(25))

    @property
    def root_folder(self) -> Path:
        """Where relative resources are resolved: the ``root`` attribute or the
        project's folder."""
        root = self.root.attrs.get("root")
        folder = Path(root) if root else self.path.parent
        return folder if folder.is_absolute() else (self.path.parent / folder)

    def bin_clips(self) -> list[BinClip]:
        """Bin clips that have a file (``resource``), in bin order."""
        clips: list[BinClip] = []
        seen: set[str] = set()
        bin_playlist = self.main_bin
        if bin_playlist is None:
            return clips
        for entry in self.children(bin_playlist, "entry"):
            producer = self.by_id(entry.attrs.get("producer", ""))
            if producer is None or producer.tag not in ("producer", "chain"):
                continue
            props = self.properties(producer)
            clip_id = props.get("kdenlive:id", "")
            resource = props.get("resource", "")
            service = props.get("mlt_service", "")
            if not clip_id or clip_id in seen or not resource:
                continue
            if service and not service.startswith(("avformat", "qimage", "pixbuf", "sox")):
                continue
            seen.add(clip_id)
            path = Path(resource)
            if not path.is_absolute():
                path = self.root_folder / path
            name = props.get("kdenlive:clipname") or path.name
            clips.append(BinClip(clip_id, name, path, producer.attrs["id"], service))
        return clips

    def placements(self, clip_id: str) -> list[Placement]:
        """Where bin clip ``clip_id`` is used on the timeline (each track's playlists),
        without duplicates (an audio and a video part at the same place count once)."""
        fps = self.profile.fps
        found: dict[tuple[int, int, int], Placement] = {}
        timeline = self.timeline()
        for track in self.children(timeline, "track"):
            for playlist in self._track_playlists(track.attrs.get("producer", "")):
                position = 0
                for item in self.children(playlist):
                    if item.tag == "blank":
                        position += parse_time(item.attrs.get("length", "0"), fps)
                    elif item.tag == "entry":
                        clip_in = parse_time(item.attrs.get("in", "0"), fps)
                        clip_out = parse_time(item.attrs.get("out", "0"), fps)
                        if self._entry_clip_id(item) == clip_id:
                            placement = Placement(position, clip_in, clip_out)
                            found[(position, clip_in, clip_out)] = placement
                        position += clip_out - clip_in + 1
        return sorted(found.values(), key=lambda p: (p.position, p.clip_in))

    def used_clip_ids(self) -> set[str]:
        """Ids of the bin clips used anywhere on the timeline (one pass over its tracks)."""
        used: set[str] = set()
        for track in self.children(self.timeline(), "track"):
            for playlist in self._track_playlists(track.attrs.get("producer", "")):
                for entry in self.children(playlist, "entry"):
                    clip_id = self._entry_clip_id(entry)
                    if clip_id:
                        used.add(clip_id)
        return used

    def duration(self) -> int:
        """The timeline's length in frames: where its last clip ends on any track.

        This is what Kdenlive renders. The tractor's own ``out`` is no guide: melt plays
        on while the black background track lasts (practically for ever), and some
        files carry an ``out`` far beyond the last clip."""
        fps = self.profile.fps
        end = 0
        for track in self.children(self.timeline(), "track"):
            for playlist in self._track_playlists(track.attrs.get("producer", "")):
                position = 0
                for item in self.children(playlist):
                    if item.tag == "blank":
                        position += parse_time(item.attrs.get("length", "0"), fps)
                    elif item.tag == "entry":
                        clip_in = parse_time(item.attrs.get("in", "0"), fps)
                        clip_out = parse_time(item.attrs.get("out", "0"), fps)
                        position += clip_out - clip_in + 1
                        end = max(end, position)
        return end

    def _track_playlists(self, producer_id: str) -> list[Element]:
        element = self.by_id(producer_id)
        if element is None:
            return []
        if element.tag == "playlist":
            return [element]
        if element.tag == "tractor":
            result = []
            for track in self.children(element, "track"):
                inner = self.by_id(track.attrs.get("producer", ""))
                if inner is not None and inner.tag == "playlist":
                    result.append(inner)
            return result
        return []

    def _entry_clip_id(self, entry: Element) -> str | None:
        own = self.properties(entry).get("kdenlive:id")
        if own:
            return own
        producer = self.by_id(entry.attrs.get("producer", ""))
        return None if producer is None else self.properties(producer).get("kdenlive:id")

    # ------------------------------------------------------------------ editing

    def encode(self, text: str) -> bytes:
        """``text`` in the file's encoding (characters it cannot hold as references)."""
        return text.encode(self.encoding, "xmlcharrefreplace")

    def apply(self, edits: Iterable[Edit]) -> bytes:
        """The file's bytes with ``edits`` applied (they must not overlap)."""
        ordered = sorted(edits, key=lambda e: (e.start, e.end))
        for before, after in zip(ordered, ordered[1:], strict=False):
            if after.start < before.end:
                raise ValueError(f"overlapping edits {before} and {after}")
        out = bytearray()
        cursor = 0
        for edit in ordered:
            out += self.data[cursor : edit.start]
            out += self.encode(edit.text)
            cursor = edit.end
        out += self.data[cursor:]
        return bytes(out)

    def indent_of(self, element: Element) -> str:
        """The whitespace before ``element`` on its line."""
        line_start = self.data.rfind(b"\n", 0, element.start) + 1
        prefix = self.data[line_start : element.start]
        return prefix.decode(self.encoding) if prefix.strip() == b"" else ""

    def child_indent(self, element: Element) -> str:
        """The indentation of ``element``'s children (one more space when it has none)."""
        kids = list(self.children(element))
        if kids:
            return self.indent_of(kids[-1])
        return self.indent_of(element) + " "


def parse_version(text: str) -> tuple[int, ...] | None:
    """``"22.12.3"`` → ``(22, 12, 3)``; ``None`` when there is no leading number."""
    numbers = re.findall(r"\d+", text.split("-")[0])
    return tuple(int(n) for n in numbers[:3]) or None


def parse_time(value: str, fps: Fraction) -> int:
    """An MLT time (frames ``"125"``, clock ``"00:00:05.000"`` or timecode
    ``"00:00:05:00"``) as a frame count at ``fps``."""
    value = value.strip()
    if not value:
        return 0
    if ":" not in value:
        return int(round(float(value)))
    parts = value.split(":")
    if len(parts) == 4:
        hours, minutes, whole, frames = (int(p) for p in parts)
        return int(round((hours * 3600 + minutes * 60 + whole) * fps)) + frames
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + float(part.replace(",", "."))
    return int(round(seconds * float(fps)))


def format_clock(seconds: float) -> str:
    """Seconds as MLT's clock string ``HH:MM:SS.mmm``."""
    millis = int(round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


# ---------------------------------------------------------------------- indexing


def _check_encoding(data: bytes, encoding: str, path: Path) -> None:
    """Refuse a file whose text encoding cannot be read or edited byte-exactly: one this
    system does not know, or one that does not keep ASCII as ASCII (UTF-16, UTF-32,
    EBCDIC; Kdenlive itself always writes UTF-8)."""
    import codecs

    hint = (
        "Kdenlive saves projects as UTF-8: open the project in Kdenlive and save it again, "
        "or correct the encoding named in its first line. The file was not changed."
    )
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or data[:4].count(0):
        raise SubplugError(
            "kdenlive-unknown-encoding",
            f"{path} is not in an encoding subplug can edit (it looks like UTF-16 or UTF-32).",
            hint,
        )
    try:
        codecs.lookup(encoding)
        keeps_ascii = "<mlt x='1'/>".encode(encoding) == b"<mlt x='1'/>"
    except (LookupError, UnicodeError):
        keeps_ascii = False
    if not keeps_ascii:
        raise SubplugError(
            "kdenlive-unknown-encoding",
            f"{path} declares the text encoding {encoding!r}, which subplug cannot read or edit.",
            hint,
        )


def _index(data: bytes, path: Path) -> list[Element]:
    """Parse ``data`` and return every element with its byte span, in document order."""
    parser = expat.ParserCreate()
    parser.buffer_text = True
    records: list[dict] = []
    stack: list[int] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        offset = parser.CurrentByteIndex
        tag_end = _tag_end(data, offset)
        empty = data[tag_end - 2 : tag_end] == b"/>"
        records.append(
            {
                "tag": tag,
                "attrs": attrs,
                "start": offset,
                "inner_start": tag_end,
                "empty": empty,
                "parent": stack[-1] if stack else None,
                "children": [],
                "text": [],
            }
        )
        index = len(records) - 1
        if stack:
            records[stack[-1]]["children"].append(index)
        stack.append(index)

    def end(tag: str) -> None:
        index = stack.pop()
        record = records[index]
        if record["empty"]:
            record["inner_end"] = record["end"] = record["inner_start"]
            return
        offset = parser.CurrentByteIndex
        record["inner_end"] = offset
        record["end"] = data.index(b">", offset) + 1

    def text(chars: str) -> None:
        if stack:
            records[stack[-1]]["text"].append(chars)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise SubplugError(
            "kdenlive-not-xml",
            f"{path} is not a readable Kdenlive project: the XML is broken at line "
            f"{exc.lineno}, column {exc.offset + 1} ({expat.ErrorString(exc.code)}).",
            "Restore a backup of the project (Kdenlive: Project > Open Backup File), "
            "then run the command again. The file was not changed.",
        ) from None
    if not records:
        raise SubplugError("kdenlive-not-xml", f"{path} is empty.", "Give a .kdenlive project.")
    return [
        Element(
            index=i,
            tag=r["tag"],
            attrs=dict(r["attrs"]),
            start=r["start"],
            end=r["end"],
            inner_start=r["inner_start"],
            inner_end=r["inner_end"],
            parent=r["parent"],
            children=tuple(r["children"]),
            text="".join(r["text"]),
        )
        for i, r in enumerate(records)
    ]


def _tag_end(data: bytes, start: int) -> int:
    """Offset just after the ``>`` closing the tag that starts at ``start``."""
    quote: int | None = None
    i = start + 1
    n = len(data)
    while i < n:
        byte = data[i]
        if quote is not None:
            if byte == quote:
                quote = None
        elif byte in (0x22, 0x27):  # " or '
            quote = byte
        elif byte == 0x3E:  # >
            return i + 1
        i += 1
    return n


def element_text(tag: str, attrs: Sequence[tuple[str, str]], children: str = "") -> str:
    """Serialise a small element (attribute values and text escaped for XML)."""
    from xml.sax.saxutils import quoteattr

    attributes = "".join(f" {name}={quoteattr(value)}" for name, value in attrs)
    if not children:
        return f"<{tag}{attributes}/>"
    return f"<{tag}{attributes}>{children}</{tag}>"


def property_text(name: str, value: str) -> str:
    """``<property name="name">value</property>`` with ``value`` escaped."""
    from xml.sax.saxutils import escape, quoteattr

    if value == "":
        return f"<property name={quoteattr(name)}/>"
    return f"<property name={quoteattr(name)}>{escape(value)}</property>"
