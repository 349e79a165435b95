"""Slide access: open any slide by URI, at a known resolution, with any backend."""

from ingest.slides.base import BackendSlide, SlideReader
from ingest.slides.geometry import LevelChoice, choose_level
from ingest.slides.handle import SlideHandle, Strategy
from ingest.slides.metadata import SlideMetadata
from ingest.slides.opener import open_slide
from ingest.slides.registry import available_readers, candidate_readers, register_reader
from ingest.slides.slide import Slide
from ingest.slides.staging import ScratchSpace, default_scratch

__all__ = [
    "BackendSlide",
    "LevelChoice",
    "ScratchSpace",
    "Slide",
    "SlideHandle",
    "SlideMetadata",
    "SlideReader",
    "Strategy",
    "available_readers",
    "candidate_readers",
    "choose_level",
    "default_scratch",
    "open_slide",
    "register_reader",
]
