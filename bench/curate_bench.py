"""Curation benchmark: rates and ratios, all measured in one run.

1. **Probe judge**: ``curate`` over a synthetic corpus with the ``probe:`` judge (no model), in
   documents per second, (a) with assessment and filtering only (revise_threshold =
   filter_threshold) and (b) with the shipped principles (revise bands: every revision is
   re-embedded with the store's embedder and re-assessed). Baseline in the same run: copying
   the corpus (read every sample, write it to new shards with the same writer), the I/O floor.
2. **HTTP client**: assessments through our ``openai:`` judge (official ``openai`` client,
   ``AsyncOpenAI``) at 64 requests in flight against a local aiohttp server that answers at once
   (in its own process), in requests per second; baseline: bare ``aiohttp`` requests with the
   same concurrency and payloads, which is as fast as Python HTTP gets here.
3. **Slow judge**: ``curate`` against the same server with a fixed latency per request. The
   server records its busy time (wall-clock with at least one request in flight) and requests;
   the job's wall-clock should be within 1.1x of that busy time (requests never wait on us) and
   close to the ideal ``requests x latency / concurrency``.

    python bench/curate_bench.py            # full sizes (a few minutes on 2 loaded cores)
    python bench/curate_bench.py --quick    # small sizes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PRINCIPLES = REPO / "configs" / "principles"


# --- a minimal OpenAI-compatible server ---------------------------------------------------------

def _score_of(text: str) -> int:
    # Deterministic scores spread over 0-100, so some documents fall in the revise bands.
    import zlib

    return zlib.crc32(text.encode()) % 101


def serve(port: int, latency_s: float, ready: multiprocessing.Event) -> None:
    """Answer /v1/chat/completions after ``latency_s``: a number for assessments ("Rate"/"rate"
    prompts), a short rewrite otherwise; /stats reports requests and busy seconds."""
    from aiohttp import web

    state = {"requests": 0, "in_flight": 0, "busy_s": 0.0, "since": 0.0, "max_in_flight": 0}

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        loop = asyncio.get_running_loop()
        if state["in_flight"] == 0:
            state["since"] = loop.time()
        state["in_flight"] += 1
        state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
        try:
            if latency_s:
                await asyncio.sleep(latency_s)
            prompt = body["messages"][-1]["content"]
            rewrite = "Rewrite" in prompt[:40]
            content = "The text, rewritten plainly." if rewrite else str(_score_of(prompt))
            state["requests"] += 1
            return web.json_response({
                "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": 2,
                          "total_tokens": len(prompt) // 4 + 2}})
        finally:
            state["in_flight"] -= 1
            if state["in_flight"] == 0:
                state["busy_s"] += loop.time() - state["since"]

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(state)

    async def reset(request: web.Request) -> web.Response:
        state.update(requests=0, busy_s=0.0, max_in_flight=0)
        return web.json_response(state)

    app = web.Application()
    app.add_routes([web.post("/v1/chat/completions", chat), web.get("/stats", stats),
                    web.post("/reset", reset)])

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()  # localhost only
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """The bench server in a child process."""

    def __init__(self, latency_s: float) -> None:
        self.port = _free_port()
        ready = multiprocessing.Event()
        self.process = multiprocessing.Process(target=serve, args=(self.port, latency_s, ready),
                                               daemon=True)
        self.process.start()
        if not ready.wait(60):
            raise RuntimeError("bench server did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def call(self, path: str, method: str = "GET") -> dict:
        import urllib.request

        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                         data=b"" if method == "POST" else None)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)


# --- 1. probe judge ------------------------------------------------------------------------------

def _no_revise_principles(directory: Path) -> Path:
    import yaml

    out = directory / "principles_no_revise"
    out.mkdir(exist_ok=True)
    for path in sorted(PRINCIPLES.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        data["revise_threshold"] = data["filter_threshold"]
        data.pop("revision_prompt", None)
        (out / path.name).write_text(yaml.safe_dump(data))
    return out


def bench_probe(work: Path, docs: int) -> dict:
    from curriculum.curation import curate, load_principles, make_judge
    from curriculum.curation.inputs import iter_input_documents
    from curriculum.shards.fast_writer import write_fast_shards
    from curriculum.shards.manifest import manifest_for
    from curriculum.store import build_store
    from curriculum.synth import write_synthetic_corpus

    corpus = write_synthetic_corpus(work / "corpus", num_docs=docs, num_shards=8, seed=0)
    build_store(corpus.out_dir, corpus.probes_dir, work / "store").close()
    manifest = manifest_for(corpus.out_dir)

    started = time.perf_counter()
    samples = ({"__key__": d.key, **d.members} for d in iter_input_documents(manifest))
    write_fast_shards(samples, work / "copy")
    copy_s = time.perf_counter() - started

    results = {"docs": docs, "copy_docs_per_s": docs / copy_s}
    for label, principles in (("filter_only", _no_revise_principles(work)),
                              ("with_revision", PRINCIPLES)):
        loaded = load_principles(principles)
        run = curate(manifest, loaded, make_judge(f"probe:{work / 'store'}"), work / label)
        results[label] = {"docs_per_s": run.docs_per_s, "ratio_to_copy": run.docs_per_s * copy_s
                          / docs, "counts": run.counts.total}
    return results


# --- 2. HTTP client ------------------------------------------------------------------------------

async def _raw_aiohttp(url: str, prompts: list[str], concurrency: int) -> float:
    import aiohttp

    semaphore = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(prompt: str) -> None:
            async with semaphore:
                body = {"model": "m", "messages": [{"role": "user", "content": prompt}],
                        "max_tokens": 8, "temperature": 0.0}
                async with session.post(f"{url}/chat/completions", json=body) as response:
                    await response.json()

        started = time.perf_counter()
        await asyncio.gather(*(one(p) for p in prompts))
        return time.perf_counter() - started


async def _ours(url: str, texts: list[str], concurrency: int) -> tuple[float, int]:
    from curriculum.curation import JudgeItem, load_principles, make_judge

    principle = load_principles(PRINCIPLES / "deception.yaml")[0]
    judge = make_judge(f"openai:{url}", model="m", concurrency=concurrency)
    items = [JudgeItem(principle, t) for t in texts]
    await judge.assess(items[:concurrency])  # connections up
    started = time.perf_counter()
    replies = await judge.assess(items)
    elapsed = time.perf_counter() - started
    await judge.aclose()
    return elapsed, sum(r.score is not None for r in replies)


def bench_http(requests: int, concurrency: int = 64) -> dict:
    from curriculum.curation import load_principles

    server = Server(latency_s=0.0)
    try:
        texts = [f"Document number {i}: the harbour was quiet that morning." for i in range(requests)]
        principle = load_principles(PRINCIPLES / "deception.yaml")[0]
        prompts = [principle.assessment_prompt(t) for t in texts]
        raw_s = asyncio.run(_raw_aiohttp(server.url, prompts, concurrency))
        ours_s, scored = asyncio.run(_ours(server.url, texts, concurrency))
    finally:
        server.stop()
    return {"requests": requests, "concurrency": concurrency, "scored": scored,
            "ours_requests_per_s": requests / ours_s, "raw_aiohttp_requests_per_s": requests / raw_s,
            "ratio_to_raw": raw_s / ours_s}


# --- 3. slow judge -------------------------------------------------------------------------------

def bench_slow(work: Path, docs: int, latency_s: float, concurrency: int) -> dict:
    from curriculum.curation import curate, load_principles, make_judge
    from curriculum.synth import write_synthetic_corpus

    corpus = write_synthetic_corpus(work / "slow_corpus", num_docs=docs, num_shards=2, seed=1)
    server = Server(latency_s=latency_s)
    try:
        judge = make_judge(f"openai:{server.url}", model="m", concurrency=concurrency)
        server.call("/reset", "POST")
        started = time.perf_counter()
        run = curate(corpus.out_dir, load_principles(PRINCIPLES), judge, work / "slow_out")
        wall_s = time.perf_counter() - started
        stats = server.call("/stats")
    finally:
        server.stop()
    ideal_s = stats["requests"] * latency_s / concurrency
    return {"docs": docs, "latency_s": latency_s, "concurrency": concurrency,
            "requests": stats["requests"], "wall_s": wall_s, "server_busy_s": stats["busy_s"],
            "ratio_wall_to_busy": wall_s / stats["busy_s"], "ideal_s": ideal_s,
            "ratio_wall_to_ideal": wall_s / ideal_s, "server_max_in_flight":
            stats["max_in_flight"], "counts": run.counts.total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--sections", default="probe,http,slow")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    work = Path(tempfile.mkdtemp(prefix="curate_bench_"))
    report: dict = {}
    try:
        if "probe" in sections:
            report["probe"] = probe = bench_probe(work, 8000 if args.quick else 40000)
            print(f"probe judge: {probe['docs']:,} docs; copy baseline "
                  f"{probe['copy_docs_per_s']:,.0f} docs/s")
            for label in ("filter_only", "with_revision"):
                r = probe[label]
                print(f"  {label:14s} {r['docs_per_s']:>9,.0f} docs/s  ({r['ratio_to_copy']:.2f}x "
                      f"the copy)  {r['counts']}")
        if "http" in sections:
            report["http"] = http = bench_http(1000 if args.quick else 5000)
            print(f"http client at {http['concurrency']} in flight: ours "
                  f"{http['ours_requests_per_s']:,.0f} req/s, bare aiohttp "
                  f"{http['raw_aiohttp_requests_per_s']:,.0f} req/s (ours/bare "
                  f"{http['ratio_to_raw']:.2f}); {http['scored']:,}/{http['requests']:,} scored")
        if "slow" in sections:
            report["slow"] = slow = bench_slow(work, 200 if args.quick else 400, 0.5, 32)
            print(f"slow judge ({slow['latency_s'] * 1000:.0f} ms/request, {slow['concurrency']} "
                  f"in flight): {slow['requests']:,} requests, wall {slow['wall_s']:.2f} s, "
                  f"server busy {slow['server_busy_s']:.2f} s (wall/busy "
                  f"{slow['ratio_wall_to_busy']:.3f}), ideal {slow['ideal_s']:.2f} s "
                  f"(wall/ideal {slow['ratio_wall_to_ideal']:.3f}); server saw at most "
                  f"{slow['server_max_in_flight']} in flight")
        print(json.dumps(report, indent=1, default=str))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
