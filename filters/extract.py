"""HTML to text for the pages of ``warc`` sources: the filter stage's first step after reading, so every signal
is computed on the text a reader would see, and tagged once: each page's outcome (its text, or why it has
none) is stored in ``attributes/extracted/`` and ``--retune`` joins it back instead of extracting again.

Two extractors, as the peers use them: trafilatura with FineWeb's settings (precision favoured, no comments,
trafilatura's deduplication; datatrove's ``Trafilatura`` step), and resiliparse's main-content extraction
(DCLM's, several times faster). Each page runs in datatrove's ``ExtractorSandbox`` (a child process per worker)
under ``filter.extract.timeout_s``: a page that takes longer, crashes the child or yields no text is removed
with a named reason (``extract:timeout``, ``extract:crashed``, ``extract:error``, ``extract:empty``; its HTML
goes to removed/), never dropped uncounted as datatrove's extractor step drops it.
"""

from __future__ import annotations

import json
import os

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.extractors.base import ExtractorSandbox

from pipeline.core.documents import REMOVED_REASON
from pipeline.core.records import records

EXTRACTED = "extracted"
REASON_PREFIX = "extract:"


def trafilatura_text(html: str) -> str | None:
    from trafilatura import extract

    # FineWeb's settings (datatrove's Trafilatura defaults)
    return extract(html, favor_precision=True, include_comments=False, deduplicate=True)


def resiliparse_text(html: str) -> str | None:
    from resiliparse.extract.html2text import extract_plain_text

    return extract_plain_text(html, main_content=True, alt_texts=False, links=False, form_fields=False, noscript=False)


EXTRACTORS = {"trafilatura": trafilatura_text, "resiliparse": resiliparse_text}


def extracted_file(attributes_folder: str, rank: int) -> str:
    return os.path.join(attributes_folder, EXTRACTED, f"{rank:05d}.jsonl.gz")


def _apply(doc, outcome: dict) -> None:
    """A page's stored outcome on its document: the extracted text, or the removal reason (the HTML stays)."""
    if outcome["status"] == "ok":
        doc.text = outcome["text"]
    else:
        doc.metadata[REMOVED_REASON] = REASON_PREFIX + outcome["status"]
    doc.metadata["extracted_by"] = outcome["extractor"]


class HtmlExtraction(PipelineStep):
    """Extracts the text of every document of ``html_sources``; other documents pass untouched."""

    name = "🧾 HTML extraction"
    type = "✂️ - EXTRAC"

    def __init__(self, html_sources: list[str], extractor: str, timeout_s: float, attributes_folder: str):
        super().__init__()
        if extractor not in EXTRACTORS:
            raise ValueError(f"filter.extract.extractor: {extractor!r} is not one of {sorted(EXTRACTORS)}")
        self.html_sources, self.extractor, self.timeout_s = set(html_sources), extractor, timeout_s
        self.attributes_folder = attributes_folder

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from filters.tagger import open_attributes

        path = extracted_file(self.attributes_folder, rank)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        import multiprocessing

        if multiprocessing.get_start_method() != "fork":  # its child gets the sandbox by fork, never pickled
            raise RuntimeError(f"HTML extraction runs pages in datatrove's ExtractorSandbox, which needs the 'fork' start "
                               f"method; this process uses {multiprocessing.get_start_method()!r}")
        extract = EXTRACTORS[self.extractor]
        # loaded here, so each sandbox child (forked from this process, again after a timeout) starts ready:
        # its warm-up must finish within timeout_s, and importing trafilatura alone takes about half a second
        extract("<html><body><p>warm-up</p></body></html>")
        with ExtractorSandbox(timeout=self.timeout_s) as sandbox, open_attributes(path) as out:
            for doc in data:
                if doc.metadata["source"] not in self.html_sources:
                    yield doc
                    continue
                with self.track_time():
                    outcome = self._extract(sandbox, extract, doc.text)
                out.write(json.dumps({"id": doc.id, **outcome}, ensure_ascii=False, sort_keys=True) + "\n")
                self.stat_update(f"extract/{outcome['status']}")
                _apply(doc, outcome)
                yield doc

    def _extract(self, sandbox: ExtractorSandbox, extract, html: str) -> dict:
        text, status = None, "ok"
        try:
            text = sandbox.process_document(html, extract)
        except TimeoutError:
            status = "timeout"
        except EOFError:  # the child died (out of memory, a crash in the parser): a fresh one takes the next page
            status = "crashed"
        except Exception:  # noqa: BLE001 - whatever the extractor raises on one page is that page's reason
            status = "error"
        if status == "ok" and not (text or "").strip():
            text, status = None, "empty"
        return {"status": status, "text": text, "extractor": self.extractor}


class StoredExtraction(PipelineStep):
    """The retune path: each page's stored outcome joined back onto its document, in read order, without
    extracting again; any mismatch (the sources changed since) fails naming the file and line."""

    name = "📎 Stored extraction"
    type = "✂️ - EXTRAC"

    def __init__(self, html_sources: list[str], attributes_folder: str):
        super().__init__()
        self.html_sources, self.attributes_folder = set(html_sources), attributes_folder

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from filters.apply import SignalFileMismatch

        path = extracted_file(self.attributes_folder, rank)
        hint = "the sources changed since they were extracted: run `ruyi2 filter` without --retune"
        stored = iter(()) if not os.path.exists(path) else records(path, SignalFileMismatch)
        for doc in data:
            if doc.metadata["source"] not in self.html_sources:
                yield doc
                continue
            where, rec = next(stored, (path, None))
            if rec is None or rec["id"] != doc.id:
                raise SignalFileMismatch(f"{where}: no stored extraction of {doc.id!r} ({hint})")
            _apply(doc, rec)
            self.stat_update("joined")
            yield doc
        if next(stored, None) is not None:
            raise SignalFileMismatch(f"{path}: holds more pages than the sources give ({hint})")
