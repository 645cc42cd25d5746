"""The relational-skew study (Chang et al. 2024): public interface."""

from diffcomp.relational.audit import audit_bindings, audit_file, audit_index_triples, read_triples, role_metrics
from diffcomp.relational.icons import GLYPHS, MAX_VOCAB_SIZE, nouns, pair_images, render_icons
from diffcomp.relational.relations import RELATIONS, caption
from diffcomp.relational.splits import FAMILIES, Split, all_triples

__all__ = [
    "FAMILIES",
    "GLYPHS",
    "MAX_VOCAB_SIZE",
    "RELATIONS",
    "Split",
    "all_triples",
    "audit_bindings",
    "audit_file",
    "audit_index_triples",
    "caption",
    "nouns",
    "pair_images",
    "read_triples",
    "render_icons",
    "role_metrics",
]
