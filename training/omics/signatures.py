"""Gene signatures: the immunotherapy library, and user signatures from files.

The built-in lists are facts from publications. Each records its source and how the
list was checked for this library (``verified``): a list that could not be checked
against the publication or an independent copy says so rather than pretend.

User signatures come from YAML (``name: [genes]`` or ``name: {genes: [...], source:
...}``), TSV/CSV in long form (columns ``signature``, ``gene``, optionally
``source`` and ``doi``), or GMT (``name<TAB>description<TAB>gene<TAB>gene...``).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from infra.storage import open_filesystem
from training.omics.errors import OmicsTableError, SignatureError

__all__ = [
    "LIBRARY",
    "Signature",
    "get_signature",
    "library_genes",
    "list_signatures",
    "load_signatures",
    "resolve_signatures",
]

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Signature:
    """A named gene list with where it comes from."""

    name: str
    genes: tuple[str, ...]
    source: str
    doi: str | None = None
    verified: str = "not verified"
    description: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise SignatureError(
                f"signature name {self.name!r} must match [A-Za-z][A-Za-z0-9_.-]{{0,63}}"
            )
        genes = tuple(str(g).strip() for g in self.genes)
        if not genes or any(not g for g in genes):
            raise SignatureError(f"signature {self.name!r} has no genes or an empty gene name")
        if len(set(genes)) != len(genes):
            dups = sorted({g for g in genes if genes.count(g) > 1})
            raise SignatureError(f"signature {self.name!r} lists {', '.join(dups)} twice")
        object.__setattr__(self, "genes", genes)

    def __len__(self) -> int:
        return len(self.genes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "genes": list(self.genes),
            "source": self.source,
            "doi": self.doi,
            "verified": self.verified,
            "description": self.description,
        }


def _genes(text: str) -> tuple[str, ...]:
    """Gene lists written as in the publications: symbols separated by spaces."""
    return tuple(text.split())


_AYERS = (
    "Ayers M, Lunceford J, Nebozhyn M, et al. IFN-γ-related mRNA profile predicts "
    "clinical response to PD-1 blockade. J Clin Invest. 2017;127(8):2930-2940 (PMID 28650338)"
)
_AYERS_DOI = "10.1172/JCI91190"

LIBRARY: Mapping[str, Signature] = {
    s.name: s
    for s in (
        Signature(
            name="ayers_ifng6",
            genes=("IFNG", "STAT1", "IDO1", "CXCL10", "CXCL9", "HLA-DRA"),
            source=_AYERS + "; the 6-gene IFN-γ signature",
            doi=_AYERS_DOI,
            verified=(
                "gene list matched against two independent public copies of the Ayers "
                "lists; citation and DOI from the PubMed record"
            ),
            description="6-gene IFN-γ signature (Ayers)",
        ),
        Signature(
            name="ayers_expanded_immune18",
            genes=_genes(
                "CD3D IDO1 CIITA CD3E CCL5 GZMK CD2 HLA-DRA CXCL13 IL2RG NKG7 HLA-E CXCR6 LAG3 TAGAP CXCL10 STAT1 GZMB"
            ),
            source=_AYERS + "; the 18-gene expanded immune signature",
            doi=_AYERS_DOI,
            verified=(
                "gene list matched against two independent public copies of the Ayers "
                "lists; not to be confused with Merck's later 18-gene T cell-inflamed GEP "
                "(CCL5, CD27, CD274, ...), a different list from the same paper"
            ),
            description="18-gene expanded immune signature (Ayers)",
        ),
        Signature(
            name="ribas_ifng10",
            genes=_genes("IFNG STAT1 CCR5 CXCL9 CXCL10 CXCL11 IDO1 PRF1 GZMA HLA-DRA"),
            source=(
                "Ribas A, et al. Association of response to PD-1 blockade with pembrolizumab "
                "with an interferon-inflammatory immune gene signature. J Clin Oncol "
                "2015;33(15 suppl):3001 (ASCO abstract); the list as published in " + _AYERS
            ),
            doi=_AYERS_DOI,
            verified=(
                "gene list read in the text of Ayers et al. 2017 (the 10-gene 'preliminary "
                "IFN-γ' signature, from the KEYNOTE-001 melanoma pilot); the ASCO abstract "
                "itself was not checked"
            ),
            description="Ribas 10-gene IFN-γ signature",
        ),
        Signature(
            name="gajewski_inflamed13",
            genes=_genes(
                "CCL2 CCL3 CCL4 CD8A CXCL9 CXCL10 ICOS GZMK IRF1 HLA-DMA HLA-DMB HLA-DOA HLA-DOB"
            ),
            source=(
                "Spranger S, Bao R, Gajewski TF. Melanoma-intrinsic β-catenin signalling "
                "prevents anti-tumour immunity. Nature 2015;523:231-235 (T cell-inflamed "
                "signature, Gajewski group)"
            ),
            doi="10.1038/nature14404",
            verified=(
                "NOT verified: the DOI was confirmed, but no copy of the 13-gene list could be "
                "read in this library's sources; the list is the one commonly attributed to "
                "the Gajewski group. Check it against the publication before relying on it"
            ),
            description="Gajewski 13-gene inflammatory (T cell-inflamed) signature",
        ),
        Signature(
            name="tcell_exhaustion6",
            genes=("CD274", "CD276", "CD8A", "LAG3", "PDCD1LG2", "TIGIT"),
            source=(
                "T-cell exhaustion signature as specified for slidebank (issue 8) from the "
                "liver-cancer immunotherapy work it serves"
            ),
            verified="NOT verified against a publication: list taken as given in issue 8",
            description="T-cell exhaustion signature",
        ),
        Signature(
            name="inflammatory4",
            genes=("CD274", "CD8A", "LAG3", "STAT1"),
            source=(
                "4-gene inflammatory signature as specified for slidebank (issue 8); the "
                "same genes are commonly attributed to the CheckMate 040 nivolumab HCC "
                "biomarker analysis (Sangro et al., J Hepatol 2020)"
            ),
            verified="NOT verified against a publication: list taken as given in issue 8",
            description="Inflammatory signature",
        ),
    )
}


def list_signatures() -> list[Signature]:
    return list(LIBRARY.values())


def get_signature(name: str, extra: Mapping[str, Signature] | None = None) -> Signature:
    """A signature by name from ``extra`` (user signatures) or the library."""
    if extra and name in extra:
        return extra[name]
    try:
        return LIBRARY[name]
    except KeyError:
        known = sorted({*LIBRARY, *(extra or {})})
        raise SignatureError(f"unknown signature {name!r}; known: {', '.join(known)}") from None


def resolve_signatures(
    names: Iterable[str | Signature], extra: Mapping[str, Signature] | None = None
) -> list[Signature]:
    """Names (or Signature objects) to Signatures; duplicates are an error."""
    out: list[Signature] = []
    for item in names:
        sig = item if isinstance(item, Signature) else get_signature(item, extra)
        if any(s.name == sig.name for s in out):
            raise SignatureError(f"signature {sig.name!r} requested twice")
        out.append(sig)
    if not out:
        raise SignatureError("no signature requested")
    return out


@cache
def library_genes() -> frozenset[str]:
    """Every gene of the built-in library (used to recognise the gene axis of a matrix)."""
    return frozenset(g for s in LIBRARY.values() for g in s.genes)


# --------------------------------------------------------------------------- user files


def load_signatures(
    source: str, *, storage_options: Mapping[str, Any] | None = None
) -> dict[str, Signature]:
    """User signatures from a ``.yaml``/``.yml``, ``.gmt``, ``.tsv``/``.txt`` or ``.csv``."""
    fs, path = open_filesystem(source, storage_options)
    with fs.open(path, "rb") as handle:
        text = handle.read().decode("utf-8-sig")
    lower = path.lower()
    if lower.endswith((".yaml", ".yml")):
        signatures = _from_yaml(text, source)
    elif lower.endswith(".gmt"):
        signatures = _from_gmt(text, source)
    elif lower.endswith((".tsv", ".txt", ".csv")):
        signatures = _from_long_table(text, "," if lower.endswith(".csv") else "\t", source)
    else:
        raise OmicsTableError("signature file must be .yaml, .gmt, .tsv or .csv", file=source)
    if not signatures:
        raise OmicsTableError("no signature in file", file=source)
    return signatures


def _make(
    name: str, genes: Iterable[str], source: str, *, file: str, line: int | None, **kw: Any
) -> Signature:
    try:
        return Signature(name=name, genes=tuple(genes), source=source, **kw)
    except SignatureError as exc:
        raise OmicsTableError(str(exc), file=file, line=line, row=name) from exc


def _add(out: dict[str, Signature], sig: Signature, file: str, line: int | None) -> None:
    if sig.name in out:
        raise OmicsTableError(
            f"signature {sig.name!r} defined twice", file=file, line=line, row=sig.name
        )
    out[sig.name] = sig


def _from_yaml(text: str, file: str) -> dict[str, Signature]:
    from infra.yaml_safe import YamlError, load_yaml

    try:
        data = load_yaml(text, file)  # bounded: an alias bomb is refused, not expanded
    except YamlError as exc:
        raise OmicsTableError(f"invalid YAML: {exc.problem}", file=file, line=exc.line) from exc
    if not isinstance(data, dict):
        raise OmicsTableError("YAML must map signature names to gene lists", file=file)
    out: dict[str, Signature] = {}
    for name, body in data.items():
        if isinstance(body, list):
            genes, meta = body, {}
        elif isinstance(body, dict) and isinstance(body.get("genes"), list):
            genes, meta = body["genes"], body
        else:
            raise OmicsTableError(
                "expected a list of genes or a mapping with a 'genes' list", file=file, row=name
            )
        sig = _make(
            str(name),
            (str(g) for g in genes),
            str(meta.get("source") or f"user file {file}"),
            file=file,
            line=None,
            doi=meta.get("doi"),
            verified=str(meta.get("verified") or "user supplied"),
            description=str(meta.get("description") or ""),
        )
        _add(out, sig, file, None)
    return out


def _from_gmt(text: str, file: str) -> dict[str, Signature]:
    out: dict[str, Signature] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.startswith("#"):
            continue
        fields = [f.strip() for f in raw.split("\t")]
        if len(fields) < 3:
            raise OmicsTableError(
                "a GMT line is name<TAB>description<TAB>gene...", file=file, line=number
            )
        name, description, genes = fields[0], fields[1], [g for g in fields[2:] if g]
        sig = _make(
            name,
            genes,
            f"user file {file}",
            file=file,
            line=number,
            verified="user supplied",
            description=description,
        )
        _add(out, sig, file, number)
    return out


def _from_long_table(text: str, sep: str, file: str) -> dict[str, Signature]:
    reader = csv.DictReader(io.StringIO(text), delimiter=sep)
    fields = {(f or "").strip().lower(): f for f in reader.fieldnames or []}
    if "signature" not in fields or "gene" not in fields:
        raise OmicsTableError(
            f"expected columns 'signature' and 'gene', found {list(fields)}", file=file, line=1
        )
    genes: dict[str, list[str]] = {}
    meta: dict[str, dict[str, str]] = {}
    first_line: dict[str, int] = {}
    for number, row in enumerate(reader, start=2):
        name = (row.get(fields["signature"]) or "").strip()
        gene = (row.get(fields["gene"]) or "").strip()
        if not name or not gene:
            column = "signature" if not name else "gene"
            raise OmicsTableError("empty value", file=file, line=number, column=column)
        genes.setdefault(name, []).append(gene)
        first_line.setdefault(name, number)
        info = meta.setdefault(name, {})
        for key in ("source", "doi"):
            value = (row.get(fields[key]) or "").strip() if key in fields else ""
            if value:
                info.setdefault(key, value)
    return {
        name: _make(
            name,
            gene_list,
            meta[name].get("source", f"user file {file}"),
            file=file,
            line=first_line[name],
            doi=meta[name].get("doi"),
            verified="user supplied",
        )
        for name, gene_list in genes.items()
    }
