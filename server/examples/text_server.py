"""A text toolkit: counts, extractive summaries, keywords and slugs.

Every tool is pure (read-only, idempotent, closed-world), so taskorch may
re-run any of them after a crash and an agent may auto-approve plans of them.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from typing import Annotated

from mcp.server import MCPServer
from pydantic import BaseModel, Field

from server.examples._common import PURE, run_stdio

server = MCPServer(
    "text",
    instructions="Text utilities: word_count, summarize, keywords, slugify. All pure.",
)

_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_STOPWORDS = frozenset(
    """a an and are as at be been but by can could did do does for from had has have he her
    his i if in into is it its just may me more most my no not of on or our over she so
    some such than that the their them then there these they this those through to too up
    us very was we were what when where which while who will with would you your also about
    after again all any because before being between both during each few further here how
    only other out own same should until why every""".split()
)


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _sentences(text: str) -> list[str]:
    flat = " ".join(text.split())
    if not flat:
        return []
    return [s.strip() for s in _SENTENCE_END.split(flat) if s.strip()]


class WordCount(BaseModel):
    words: int = Field(description="Words (runs of letters and digits).")
    characters: int = Field(description="Characters, spaces included.")
    characters_no_spaces: int = Field(description="Characters other than whitespace.")
    lines: int = Field(description="Lines (0 for empty text).")
    sentences: int = Field(description="Sentences, split after . ! or ?.")
    reading_time_s: float = Field(description="Estimated reading time at 230 words a minute.")


@server.tool(annotations=PURE, title="Count words")
def word_count(text: Annotated[str, Field(description="The text to measure.")]) -> WordCount:
    """Count the words, characters, lines and sentences of a text."""
    words = len(_words(text))
    return WordCount(
        words=words,
        characters=len(text),
        characters_no_spaces=sum(1 for c in text if not c.isspace()),
        lines=len(text.splitlines()),
        sentences=len(_sentences(text)),
        reading_time_s=round(words / 230 * 60, 1),
    )


class Summary(BaseModel):
    summary: str = Field(description="The chosen sentences joined, in their original order.")
    sentences: list[str] = Field(description="The chosen sentences, in their original order.")
    kept: int = Field(description="Sentences kept.")
    total: int = Field(description="Sentences in the text.")


@server.tool(annotations=PURE, title="Summarize by extraction")
def summarize(
    text: Annotated[str, Field(description="The text to summarize.")],
    max_sentences: Annotated[int, Field(ge=1, le=50, description="Most sentences to keep.")] = 3,
) -> Summary:
    """Summarize a text by picking its most representative sentences (no model involved).

    Sentences are scored by how frequent their content words are in the whole text,
    normalised by length; the best ones are returned in their original order.
    """
    sentences = _sentences(text)
    freq = Counter(w.lower() for w in _words(text) if w.lower() not in _STOPWORDS)
    top = max(freq.values(), default=1)

    def score(sentence: str) -> float:
        words = [w.lower() for w in _words(sentence)]
        content = [w for w in words if w not in _STOPWORDS]
        if not content:
            return 0.0
        return sum(freq[w] / top for w in content) / math.sqrt(len(content))

    ranked = sorted(range(len(sentences)), key=lambda i: (-score(sentences[i]), i))
    chosen = sorted(ranked[:max_sentences])
    picked = [sentences[i] for i in chosen]
    return Summary(
        summary=" ".join(picked), sentences=picked, kept=len(picked), total=len(sentences)
    )


class Keyword(BaseModel):
    word: str = Field(description="The keyword, lower-cased.")
    count: int = Field(description="How often it occurs.")


class Keywords(BaseModel):
    keywords: list[Keyword] = Field(description="The most frequent content words, best first.")
    words: list[str] = Field(description="The same keywords, as plain words.")


@server.tool(annotations=PURE, title="Extract keywords")
def keywords(
    text: Annotated[str, Field(description="The text to scan.")],
    top_k: Annotated[int, Field(ge=1, le=100, description="How many keywords to return.")] = 5,
    min_length: Annotated[
        int, Field(ge=1, le=40, description="Ignore words shorter than this.")
    ] = 3,
) -> Keywords:
    """List the most frequent content words of a text (stopwords removed), ties by first use."""
    counts: Counter[str] = Counter()
    first: dict[str, int] = {}
    for i, raw in enumerate(_words(text)):
        w = raw.lower()
        if len(w) < min_length or w in _STOPWORDS or w.isdigit():
            continue
        counts[w] += 1
        first.setdefault(w, i)
    # Fold a plural into its singular when both occur ("plans" into "plan").
    for w in [w for w in counts if w.endswith("s") and not w.endswith("ss")]:
        if w[:-1] in counts:
            counts[w[:-1]] += counts.pop(w)
            first[w[:-1]] = min(first[w[:-1]], first.pop(w))
    best = sorted(counts, key=lambda w: (-counts[w], first[w]))[:top_k]
    return Keywords(keywords=[Keyword(word=w, count=counts[w]) for w in best], words=best)


class Slug(BaseModel):
    slug: str = Field(description="Lower-case ASCII words joined by the separator.")


@server.tool(annotations=PURE, title="Make a slug")
def slugify(
    text: Annotated[str, Field(description="The text to turn into a URL-safe slug.")],
    max_length: Annotated[int, Field(ge=1, le=200, description="Cut the slug to this.")] = 80,
    separator: Annotated[str, Field(pattern=r"^[-_.]$", description="One of - _ .")] = "-",
) -> Slug:
    """Turn a text into a URL-safe slug: accents dropped, lower case, words joined by `-`."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    slug = separator.join(words)[:max_length].strip(separator)
    return Slug(slug=slug)


def main() -> None:
    run_stdio(server)


if __name__ == "__main__":
    main()
