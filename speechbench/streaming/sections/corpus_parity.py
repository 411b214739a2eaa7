"""Part 3 sections: the utterance pool (setup), whole-utterance transcripts of the same causal model
(offline), and the engine fed unpaced against them (parity)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from speechbench.asr.ctc.decode import greedy_decode
from speechbench.asr.ctc.features import LogMel, waveforms_to_batch
from speechbench.streaming.loadgen import StreamKind, UttAudio, speech_bounds, wer_counts


class CorpusParitySections:
    """The utterance pool, the offline reference transcripts and the streaming-vs-offline parity check."""

    def setup(self) -> dict[str, Any]:
        from speechbench.speech.manifest import read_manifest

        c = self.cfg
        if c.manifest:
            manifest = Path(c.manifest)
        else:
            from speechbench.speech.corpus import build_corpus, preset

            manifest = build_corpus(preset("quick" if c.quick else "default"), progress=self.progress).manifest
        res = read_manifest(manifest)
        utts = [u for u in res.utterances if u.condition == "clean"] or res.utterances
        if c.accents and c.accents != ["all"]:
            utts = [u for u in utts if u.dialect in c.accents]
        if not utts:
            raise RuntimeError(f"no utterances in {manifest} for accents {c.accents}")
        # Spread the pool over accents: round-robin by accent, seeded order within each.
        rng = np.random.default_rng(c.seed)
        by_acc: dict[str, list] = {}
        for u in utts:
            by_acc.setdefault(u.dialect, []).append(u)
        lists = [list(np.array(v, dtype=object)[rng.permutation(len(v))]) for _, v in sorted(by_acc.items())]
        picked = []
        while len(picked) < c.utterances and any(lists):
            for lst in lists:
                if lst and len(picked) < c.utterances:
                    picked.append(lst.pop())
        from speechbench.speech.audio import load_audio

        for u in picked:
            audio = load_audio(u.audio_path or u.audio_filepath).astype(np.float32)
            on, off = speech_bounds(audio)
            self.pool.append(UttAudio(u.id, u.text, audio, on, off, u.dialect))
        synth = list(self.pool)  # UttAudio's source defaults to "synthetic"
        real = self.add_real_speech()
        dur = [len(u.audio) / 16000 for u in synth]
        return {"manifest": str(manifest), "manifest_failures": len(res.failures), "pool_utterances": len(dur),
                "real_speech": real,
                "pool_audio_s": float(sum(dur)), "pool_accents": sorted({u.dialect for u in synth}),
                "utterance_s_mean": float(np.mean(dur)),
                "speech_s_mean": float(np.mean([(u.offset - u.onset) / 16000 for u in synth])),
                "reference_timing": "speech onset/end per utterance from 10 ms frame energy of the clean audio "
                                    "(> max(-45 dBFS, peak - 40 dB))"}

    def add_real_speech(self) -> dict[str, Any]:
        """Real recordings (and one continuous-speech script made from the longest) appended to the pool,
        for the pretrained recognizers' streams; the CTC model's streams replay synthetic speech only."""
        from speechbench.speech.audio import load_audio
        from speechbench.speech.manifest import read_manifest
        from speechbench.speech.pauses import compress_pauses
        from speechbench.speech.real_speech import DEFAULT_OUT, build_real_speech

        c = self.cfg
        if c.real_speech == "none":
            return {"source": "none"}
        if c.real_speech in ("default", "bundled"):
            out = DEFAULT_OUT if c.real_speech == "default" else DEFAULT_OUT.with_name("real_speech_bundled")
            manifest = build_real_speech(out, sources=("mfa", "moonshine-voice") if c.real_speech == "default"
                                         else ("moonshine-voice",))
        else:
            manifest = Path(c.real_speech)
        res = read_manifest(manifest)
        real = []
        for u in res.utterances:
            audio = load_audio(u.audio_path or u.audio_filepath).astype(np.float32)
            on, off = speech_bounds(audio)
            real.append(UttAudio(u.id, u.text, audio, on, off, u.speaker, "real"))
        self.pool += real
        info: dict[str, Any] = {"manifest": str(manifest), "clips": len(real), "failures": len(res.failures),
                                "audio_s": float(sum(len(u.audio) for u in real) / 16000),
                                "words": sum(len(u.text.split()) for u in real),
                                "speakers": sorted({u.dialect for u in real})}
        if c.continuous_s > 0 and real:
            # the longest recordings, pauses shortened to 0.25 s (the VAD endpointer waits for 0.3 s), joined
            # until continuous_s: speech that never pauses long enough for an endpoint
            parts, texts, total = [], [], 0
            for u in sorted(real, key=lambda u: -len(u.audio)):
                a = compress_pauses(u.audio, 0.25)
                parts.append(a)
                texts.append(u.text)
                total += len(a)
                if total >= c.continuous_s * 16000:
                    break
            audio = np.concatenate(parts)
            self.pool.append(UttAudio("continuous", " ".join(texts), audio, 0, len(audio), "continuous",
                                      "continuous"))
            info["continuous"] = {"seconds": len(audio) / 16000, "from": len(parts), "words":
                                  sum(len(t.split()) for t in texts), "max_pause_s": 0.25}
        return info

    def stream_kinds(self, which: str, streams: int) -> list[StreamKind]:
        """What each stream of a level replays. ``synthetic``: the synthetic pool (the CTC model's
        sections). ``mixed``: real and synthetic streams alternating, and stream 2 (of levels with 3+
        streams) the continuous script, when there is real speech; a single stream replays real speech."""
        by: dict[str, list[int]] = {}
        for i, u in enumerate(self.pool):
            by.setdefault(u.source, []).append(i)
        synth = StreamKind("synthetic", np.array(by["synthetic"]))
        if which == "synthetic" or "real" not in by:
            return [synth]
        if which == "continuous" and "continuous" in by:
            return [StreamKind("continuous", np.array(by["continuous"]), (0.5, 1.0))]
        real = StreamKind("real", np.array(by["real"]))
        if streams == 1:  # the single-stream figures of a real recognizer: on real speech
            return [real]
        kinds = [real, synth]
        if "continuous" in by and streams >= 3:
            kinds = [real, synth, StreamKind("continuous", np.array(by["continuous"]), (0.3, 0.6))]
            kinds += [real, synth] * ((streams - 3 + 1) // 2)
        return kinds

    def measure_offline(self) -> dict[str, Any]:
        """Whole-utterance pass of the same causal model on the same audio: the parity reference."""
        extractor = LogMel(self.feat_cfg).to(self.device)
        t0 = time.perf_counter()
        bs = 16
        pool = self.synthetic_pool
        for i in range(0, len(pool), bs):
            chunk = pool[i: i + bs]
            wave, lens = waveforms_to_batch([u.audio for u in chunk])
            feats, flen = extractor(wave.to(self.device), lens.to(self.device))
            lp, olen = self.model(feats, flen)
            for u, ids in zip(chunk, greedy_decode(lp, olen), strict=True):
                self.offline_hyp[u.id] = self.tokenizer.decode(ids)
        secs = time.perf_counter() - t0
        w = wer_counts([u.text for u in pool], [self.offline_hyp[u.id] for u in pool])
        audio_s = sum(len(u.audio) for u in pool) / 16000
        return {"wer_pool": w, "seconds": secs, "rtf": secs / audio_s, "decoder": "greedy",
                "examples": [{"ref": u.text, "hyp": self.offline_hyp[u.id]} for u in pool[:3]]}

    @property
    def synthetic_pool(self) -> list[UttAudio]:
        return [u for u in self.pool if u.source == "synthetic"]

    def measure_parity(self) -> dict[str, Any]:
        """The engine, fed as fast as it consumes (not paced), many streams joining and leaving mid-batch,
        endpointing off: each utterance's transcript must equal the offline one exactly."""
        got: dict[str, list[str]] = {}

        def sink(ev: Any) -> None:
            if ev.kind == "final":
                got.setdefault(ev.stream_id, []).append(ev.text)

        # Unpaced on purpose (the scheduler is always busy): admission by load is off here.
        eng = self.new_engine(sink, endpoint="none", max_wait_ms=0.0, max_duty=2.0, overload_ms=1e9)
        step = eng.step_samples
        todo = [i for i, u in enumerate(self.pool) if u.source == "synthetic"]
        active: dict[str, tuple[int, int]] = {}  # stream -> (utt, position)
        futures = {}
        t0 = time.perf_counter()
        n = 0
        try:
            while todo or active:
                while todo and len(active) < self.cfg.parity_streams:
                    k = todo.pop(0)
                    sid = f"p{n}"
                    n += 1
                    eng.add_stream(sid)
                    active[sid] = (k, 0)
                for sid, (k, pos) in list(active.items()):
                    a = self.pool[k].audio
                    eng.process_chunk(sid, np.ascontiguousarray(a[pos: pos + step]))
                    if pos + step >= len(a):
                        futures[sid] = (k, eng.finalize_stream(sid))
                        del active[sid]
                    else:
                        active[sid] = (k, pos + step)
                while eng.backlog_samples() > step * max(1, len(active)):
                    time.sleep(0.001)
            results = [(k, f.result(timeout=60)) for k, f in futures.values()]
        finally:
            stats = eng.stats()
            eng.stop()
        secs = time.perf_counter() - t0
        same = [text == self.offline_hyp[self.pool[k].id] for k, text in results]
        mism = [{"utt": self.pool[k].id, "streaming": text, "offline": self.offline_hyp[self.pool[k].id]}
                for k, text in results if text != self.offline_hyp[self.pool[k].id]]
        return {"utterances": len(results), "identical": int(sum(same)), "identical_rate": float(np.mean(same)),
                "mismatches": mism[:10], "seconds": secs, "batch_size_mean": stats["batch_size_mean"],
                "shed_chunks": stats["shed_chunks"],
                "method": f"{self.cfg.parity_streams} concurrent streams, a new one joining as each finishes; "
                          "endpointing off; unpaced (each round waits for the engine); final chunk zero-padded"}
