"""The last step of a document stage: kept documents to ``output/``, marked ones to ``removed/``."""

from __future__ import annotations

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from pipeline.core.documents import REMOVED_REASON, DocWriter, RemovedDocWriter


class StageRouter(PipelineStep):
    name = "🔀 Stage router"
    type = "💽 - WRITER"

    def __init__(self, output_folder: str, removed_folder: str, stage: str, removed_prefix: str = ""):
        super().__init__()
        self.output_folder, self.removed_folder, self.stage = output_folder, removed_folder, stage
        self.removed_prefix = removed_prefix  # a stage with two removing passes keeps their files apart

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with DocWriter(self.output_folder) as kept, RemovedDocWriter(self.removed_folder, self.stage, prefix=self.removed_prefix) as removed:
            for doc in data:
                with self.track_time():  # the writers' share of the stage's time (the filter's profile)
                    if doc.metadata.get(REMOVED_REASON):
                        removed.write(doc, rank)
                        self.stat_update("removed")
                    else:
                        kept.write(doc, rank)
                        self.stat_update("kept")
        return
        yield  # a generator that yields nothing: the router is the end of the pipeline
