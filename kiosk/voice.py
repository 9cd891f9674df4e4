"""Voice guidance: which prompts a screen speaks, and the prompt files (rendered offline with espeak-ng, or the institution's own).

A prompt is named by its message-catalog key and stored as
``<dir>/<lang>/<key>.wav``; the site's own texts from its survey config are
``site.question`` (the rating question) and ``site.reason.<code>`` (an answer's
label). The institution's recordings (``[ui] voice_dir``) take precedence over
the rendered cache (``onetap-kiosk voices``, and the kiosk itself for a new
survey config), file by file. Rendered prompts are 44.1 kHz 16-bit stereo, the format the kiosk's
audio output is opened in, so playback needs no conversion.
"""

from __future__ import annotations

import array
import hashlib
import json
import logging
import subprocess
import sys
import tempfile
import wave
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

from kiosk import protocol
from kiosk.catalog import DEFAULT_LANG, SHORT, Catalog
from kiosk.errors import KioskError

log = logging.getLogger(__name__)

#: espeak-ng's voice for each language.
ESPEAK_VOICES = {"ko": "ko", "en": "en", "zh": "cmn", "vi": "vi", "ja": "ja"}
RATE = 44100
INDEX = "index.json"

if TYPE_CHECKING:
    from kiosk.protocol import SurveyConfig

#: Prefix of the prompts that say the site's own texts.
SITE = "site."

#: Keys only voice uses (spoken, never shown).
VOICE_KEYS = ("voice.keys", "voice.chosen", "voice.timeout", "voice.help")


class VoiceError(KioskError, RuntimeError):
    """The prompts cannot be rendered (espeak-ng missing or failing, the cache unwritable)."""


def spoken_keys(catalog: Catalog) -> list[str]:
    """Every catalog key a screen may speak."""
    keys = ["question", "skip", "thanks.title", "thanks.body", "error.title", "error.body",
            "sleep.title", "reason.title", "age.title", *VOICE_KEYS]
    keys += [f"score.{s}" for s in protocol.SCORES]
    # Never a label's short form (kiosk.catalog.SHORT): voice says the full label.
    keys += [key for key in catalog.messages
             if key.startswith(("reason.", "age.")) and not key.endswith(SHORT) and key not in keys]
    return keys


def site_texts(survey: "SurveyConfig | None", catalog: Catalog) -> dict[str, tuple[str, str]]:
    """The site's own texts a screen in *catalog*'s language shows, by prompt name: (espeak voice, text).

    As shown (Catalog.question, Catalog.label): the site's text in this
    language; for an answer the catalog has none of, the site's Korean one
    (said in Korean).
    """
    if survey is None:
        return {}
    lang = catalog.lang
    out: dict[str, tuple[str, str]] = {}
    if survey.question.get(lang):
        out[f"{SITE}question"] = (ESPEAK_VOICES[lang], survey.question[lang])
    for code, texts in survey.reason_labels.items():
        if texts.get(lang):
            out[f"{SITE}reason.{code}"] = (ESPEAK_VOICES[lang], texts[lang])
        elif not catalog.messages.get(f"reason.{code}") and texts.get(DEFAULT_LANG):
            out[f"{SITE}reason.{code}"] = (ESPEAK_VOICES[DEFAULT_LANG], texts[DEFAULT_LANG])
    return out


def as_shown(keys: list[str], survey: "SurveyConfig | None", catalog: Catalog, prompts: "Prompts") -> list[str]:
    """*keys* with the site's own prompt wherever the screen shows the site's text and its file is there
    (until the kiosk has rendered a new config's texts, the catalog's prompt is said)."""
    site = site_texts(survey, catalog)
    return [SITE + key if SITE + key in site and prompts.path(catalog.lang, SITE + key) is not None else key
            for key in keys]


# -- what is spoken --------------------------------------------------------------


def option_key(view: str, question_key: str | None, codes: tuple[str, ...], focus: int) -> str | None:
    """The catalog key of the focused target (a face or a follow-up answer)."""
    if view == "rating":
        return f"score.{focus + 1}"
    if question_key and 0 <= focus < len(codes):
        return f"{question_key}.{codes[focus]}"
    return None


def screen_prompts(view: str, question_key: str | None = None, focused: str | None = None,
                   keypad: bool = False) -> list[str]:
    """A screen's announcement: its question, how to answer (keypad), the focused target."""
    if view == "rating":
        said = ["question"]
    elif question_key:
        said = [f"{question_key}.title"]
    elif view == "thanks":
        return ["thanks.title", "thanks.body"]
    elif view == "error":
        return ["error.title", "error.body"]
    elif view == "sleep":
        return ["sleep.title"]
    else:
        return []
    if keypad:
        said.append("voice.keys")
    if focused:
        said.append(focused)
    return said


# -- the files ---------------------------------------------------------------------------


class Prompts:
    """Where each prompt's sound is: the institution's recording, else the rendered one."""

    def __init__(self, cache: Path, own: Path | None = None):
        self.cache = Path(cache)
        self.own = Path(own) if own else None

    @classmethod
    def from_config(cls, cfg) -> "Prompts":
        """``[ui] voice_cache`` (default <data_dir>/voices) and ``[ui] voice_dir``."""
        ui = cfg.ui
        return cls(Path(ui.voice_cache) if ui.voice_cache else Path(cfg.data_dir) / "voices",
                   Path(ui.voice_dir) if ui.voice_dir else None)

    def path(self, lang: str, key: str) -> Path | None:
        for base in (self.own, self.cache):
            if base is None:
                continue
            candidate = base / lang / f"{key}.wav"
            if candidate.is_file():
                return candidate
        return None


def _to_output_format(raw: bytes, rate: int, channels: int) -> bytes:
    """16-bit mono/stereo PCM at *rate* -> 44.1 kHz stereo, by linear interpolation.

    Written here rather than with a resampling library: espeak-ng's output is
    one fixed, low rate and speech needs no better than linear.
    """
    samples = array.array("h")
    samples.frombytes(raw)
    if sys.byteorder == "big":
        samples.byteswap()
    mono = samples if channels == 1 else samples[::channels]
    count = len(mono)
    out_count = count * RATE // rate if count else 0
    out = array.array("h", bytes(4 * out_count))
    step = rate / RATE
    for index in range(out_count):
        position = index * step
        low = int(position)
        high = min(low + 1, count - 1)
        fraction = position - low
        value = int(mono[low] + (mono[high] - mono[low]) * fraction)
        out[2 * index] = out[2 * index + 1] = value
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


def render(catalogs: Mapping[str, Catalog], out: Path, *, espeak: str = "espeak-ng",
           force: bool = False, survey: "SurveyConfig | None" = None, site_only: bool = False) -> dict[str, int]:
    """Render every spoken prompt of every language into *out*; unchanged texts are kept.

    With *survey*, the site's own texts too (site_texts); *site_only*: those
    alone (the kiosk, when a new survey config arrives). Returns {lang:
    prompts rendered now}. Raises VoiceError when espeak-ng fails.
    """
    rendered: dict[str, int] = {}
    for lang, catalog in catalogs.items():
        texts = {} if site_only else {key: (ESPEAK_VOICES[lang], catalog.messages[key])
                                       for key in spoken_keys(catalog) if catalog.messages.get(key)}
        texts.update(site_texts(survey, catalog))
        folder = Path(out) / lang
        try:
            folder.mkdir(parents=True, exist_ok=True)
            index = json.loads((folder / INDEX).read_text(encoding="utf-8")) if (folder / INDEX).exists() else {}
        except (OSError, ValueError) as exc:
            raise VoiceError(f"{folder}: {exc}") from None
        count = 0
        for key, (voice, text) in texts.items():
            digest = hashlib.sha256(f"{voice}\n{text}".encode()).hexdigest()
            target = folder / f"{key}.wav"
            if not force and index.get(key) == digest and target.exists():
                continue
            _speak_to(espeak, voice, text, target)
            index[key] = digest
            count += 1
        try:
            (folder / INDEX).write_text(json.dumps(index, indent=1, sort_keys=True), encoding="utf-8")
        except OSError as exc:
            raise VoiceError(f"{folder / INDEX}: {exc.strerror}") from None
        rendered[lang] = count
    return rendered


def _speak_to(espeak: str, voice: str, text: str, target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "espeak.wav"
        try:
            # On stdin, not as an argument: a site's text from the server could start with "-".
            subprocess.run([espeak, "-v", voice, "-s", "150", "-w", str(raw_path), "--stdin"],
                           input=text.encode("utf-8"), check=True, capture_output=True, timeout=60)
        except FileNotFoundError:
            raise VoiceError(f"{espeak} not found: install espeak-ng (deploy/pi/setup.sh does)") from None
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            stderr = getattr(exc, "stderr", b"") or b""
            raise VoiceError(f"{espeak} -v {voice} failed: {stderr.decode(errors='replace')[:200]}") from None
        with wave.open(str(raw_path), "rb") as source:
            if source.getsampwidth() != 2:
                raise VoiceError(f"{espeak} wrote {8 * source.getsampwidth()}-bit audio, not 16-bit")
            pcm = _to_output_format(source.readframes(source.getnframes()), source.getframerate(),
                                    source.getnchannels())
    partial = target.with_name(target.name + ".tmp")
    try:
        with wave.open(str(partial), "wb") as sink:
            sink.setnchannels(2)
            sink.setsampwidth(2)
            sink.setframerate(RATE)
            sink.writeframes(pcm)
        partial.replace(target)
    except OSError as exc:
        raise VoiceError(f"{target}: {exc.strerror}") from None


def languages_missing(prompts: Prompts, languages: Iterable[str], catalogs: Mapping[str, Catalog]) -> list[str]:
    """Languages with a spoken prompt that has no file (the kiosk logs these at start)."""
    return [lang for lang in languages
            if any(prompts.path(lang, key) is None for key in spoken_keys(catalogs[lang]))]
