"""MLPerf Tiny text mode: the DUT command set, a runner-style host over a real pty, and a
client written from the runner's and the reference firmware's published grammar against the
digits package served by `fpgaprint board serve --protocol mlperf-tiny`.

`MatBackend` is a deterministic stand-in for the accelerator (raw = x @ W): no board here.
"""

from __future__ import annotations

import csv
import queue
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import serial
import yaml

from fpgaprint.core.errors import InputError, LinkError
from fpgaprint.hw_targets.link import BoardLink, LinkFaults, PtyTransport, TcpTransport
from fpgaprint.hw_targets.mlperf import (
    MlperfTinyClient,
    MlperfTinyHandler,
    check_model_id,
    container_dtype,
    results_line,
)
from fpgaprint.hw_targets.served import ServedBoard


class MatBackend:
    def __init__(self):
        self.W = np.random.default_rng(7).integers(-50, 50, size=(16, 4))
        self.calls = self.resets = 0

    def identity(self) -> dict:
        return {"board": "ZCU104", "serial": "SN-9", "package_id": "cd" * 32,
                "bitstream_sha256": None, "backend": "matrix", "name": "mat-16"}

    def infer(self, x):
        self.calls += 1
        raw = x.reshape(len(x), -1) @ self.W
        return raw, raw.argmax(axis=1)

    def selftest(self) -> dict:
        return {"passed": True, "count": 0, "exact_mismatches": 0, "label_matches": 0,
                "seconds": 0.0}

    def reset(self) -> None:
        self.resets += 1


def run(handler: MlperfTinyHandler, text: str) -> list[list[str]]:
    """Answers (lines) to the commands in `text`."""
    return [answer.decode().split("\r\n")[:-1] for answer in handler.feed(text.encode())]


def probabilities(line: str) -> np.ndarray:
    m = re.fullmatch(r"m-results-\[([^]]+)]", line)
    assert m, line
    return np.array([float(v) for v in m.group(1).split(",")])


def softmax(z) -> np.ndarray:
    e = np.exp(np.asarray(z, dtype=np.float64) - np.max(z))
    return e / e.sum()


@pytest.fixture
def handler():
    return MlperfTinyHandler(MatBackend(), (16,), "INT8")


def test_name_profile_and_every_answer_ends_with_ready(handler):
    name, profile, unknown = run(handler, "name%profile%\r\nbogus 1 2%")
    assert name == ["m-name-dut-[fpgaprint-ZCU104]", "m-ready"]
    assert profile[0] == "m-profile-[fpgaprint MLPerf Tiny mode 2]"
    assert profile[1] == "m-model-[mat-16]"
    assert profile[-1] == "m-ready"
    assert unknown == ["e-[Unknown command 'bogus']", "m-ready"]


def test_db_load_infer_results(handler):
    x = np.arange(-8, 8, dtype=np.int8)
    hexed = x.tobytes().hex()
    answers = run(handler, f"db load 16%db {hexed[:20]}%db {hexed[20:]}%infer 3 2%results%")
    assert answers[0] == ["m-[Expecting 16 bytes]", "m-ready"]
    assert answers[1] == ["m-ready"] and answers[2] == ["m-load-done", "m-ready"]
    infer = answers[3]
    assert infer[:3] == ["m-warmup-start-2", "m-warmup-done", "m-infer-start-3"]
    assert re.fullmatch(r"m-lap-us-\d+", infer[3]) and re.fullmatch(r"m-lap-us-\d+", infer[4])
    assert int(infer[4][9:]) >= int(infer[3][9:])
    want = x.astype(np.int64) @ handler.backend.W
    assert infer[5] == "m-infer-done"
    probs = probabilities(infer[6])
    np.testing.assert_allclose(probs, softmax(want), atol=5e-7)
    assert probs.argmax() == want.argmax() and abs(probs.sum() - 1) < 1e-5
    assert answers[4] == [infer[6], "m-ready"]
    assert handler.backend.calls == 5  # 2 warm-ups + 3 timed


def test_commands_split_across_reads_and_default_warmups(handler):
    assert handler.feed(b"db lo") == []
    assert run(handler, "ad 16%") == [["m-[Expecting 16 bytes]", "m-ready"]]
    run(handler, "db " + "01" * 16 + "%")
    answer = run(handler, "infer%")[0]
    assert answer[:3] == ["m-warmup-start-10", "m-warmup-done", "m-infer-start-1"]


@pytest.mark.parametrize("commands, error", [
    ("infer 1 0%", "e-[Input buffer holds 0 bytes, the model takes 16]"),
    ("db 0102%", "e-[Buffer not allocated; send 'db load N' first]"),
    ("db load 0%", "e-[Command 'db load' requires a number of bytes > 0]"),
    ("db load 16%db 123%", "e-[Odd number of hex digits]"),
    ("db load 16%db zz%", "e-[Invalid hex digits 'zz']"),
    ("db load 4%db 01020304%infer 1 0%", "e-[Input buffer holds 4 bytes, the model takes 16]"),
    ("infer 0%", "e-[Inference iterations must be >0]"),
    ("infer x%", "e-[Bad infer arguments 'x']"),
    ("results%", "e-[No inference has run]"),
])
def test_errors_are_reported_and_followed_by_ready(handler, commands, error):
    last = run(handler, commands)[-1]
    assert last == [error, "m-ready"]


def test_reboot_drops_the_buffer(handler):
    run(handler, "db load 16%")
    assert handler.reboot() == [b"m-init-done\r\nm-ready\r\n"]
    assert handler.backend.resets == 1
    assert run(handler, "db 00%") == [["e-[Buffer not allocated; send 'db load N' first]",
                                       "m-ready"]]


@pytest.mark.parametrize("datatype, dtype", [
    ("UINT8", "<u1"), ("INT8", "<i1"), ("UINT4", "<u1"), ("INT16", "<i2"), ("UINT9", "<u2"),
    ("BIPOLAR", "<i1"), ("BINARY", "<u1"), ("INT32", "<i4"),
])
def test_container_dtype(datatype, dtype):
    assert container_dtype(datatype) == np.dtype(dtype)


def test_container_dtype_refuses_non_integers():
    with pytest.raises(InputError, match="needs an integer input datatype, got 'FLOAT32'"):
        container_dtype("FLOAT32")


def test_runner_style_host_over_a_pty():
    backend = MatBackend()
    handler = MlperfTinyHandler(backend, (16,), "INT8")
    x = np.random.default_rng(0).integers(-128, 128, size=(6, 16))
    with BoardLink(PtyTransport(), handler, LinkFaults()) as link:
        with MlperfTinyClient(link.url, timeout=2.0) as host:
            assert host.name() == "fpgaprint-ZCU104"
            probs, labels = host.classify(x, "INT8")
            with pytest.raises(LinkError, match=r"refused 'infer 0 0': e-\[Inference "):
                host.infer(0, 0)
    want = x @ backend.W
    assert (want.sum(axis=1) < 0).any()  # raw rows that sum negative: argmax would be argmin
    np.testing.assert_allclose(probs, [softmax(w) for w in want], atol=5e-7)
    np.testing.assert_array_equal(labels, want.argmax(axis=1))
    assert host.bytes_sent > 6 * 16 * 2  # hex doubles every byte


@pytest.mark.parametrize("model_id", ["ic01", "kws01", "digits-mlp", "m.v2+q_8"])
def test_model_id_is_reported(model_id):
    handler = MlperfTinyHandler(MatBackend(), (16,), "INT8", model_id=model_id)
    assert run(handler, "profile%")[0][1] == f"m-model-[{model_id}]"


@pytest.mark.parametrize("model_id", ["", "ic01]", "a b", "-x", "x" * 65, "ic01\r\n"])
def test_model_id_the_runner_cannot_read_is_refused(model_id):
    with pytest.raises(InputError, match="MLPerf Tiny model id .*--mlperf-model-id"):
        MlperfTinyHandler(MatBackend(), (16,), "INT8", model_id=model_id)
    with pytest.raises(InputError):
        check_model_id(model_id)


def test_scores_are_the_dequantised_output_and_near_ties_keep_the_label():
    """`scores` (the golden graph's tail) decides; printed precision grows until the runner's
    normalise-then-argmax finds the board's label."""
    backend = MatBackend()
    shift = np.zeros(4)
    shift[2] = 1e-9  # class 2 wins by 1e-9 after dequantisation

    def scores(raw):
        return np.zeros_like(raw, dtype=np.float64) + 7.0 + shift

    class Tie(MatBackend):
        def infer(self, x):
            raw, _ = super().infer(x)
            return raw, np.array([2])

    handler = MlperfTinyHandler(Tie(), (16,), "INT8", scores=scores)
    run(handler, "db load 16%db " + "01" * 16 + "%")
    line = run(handler, "infer 1 0%")[0][-2]
    values = [float(v) for v in line[len("m-results-["):-1].split(",")]
    assert int(np.argmax([v / sum(values) for v in values])) == 2
    assert len(line.split(",")[0].split(".")[1]) > 6  # 6 decimals would print a 4-way tie
    assert backend.calls == 0
    assert results_line(np.array([0.25, 0.75]), 1) == "m-results-[0.250000,0.750000]"
    assert results_line(np.array([-3.5]), 0) == "m-results-[-3.500000]"  # one output as is


# ----------------------------------------------------------- the runner's published grammar


class RunnerGrammarHost:
    """A host written from the MLPerf Tiny runner's and reference firmware's published grammar
    (mlcommons/tiny benchmark/runner, api/internally_implemented): a command is its text and
    '%'; the DUT answers lines ending in LF (CR and NUL are dropped) and closes each answer
    with a line containing 'm-ready'; `db` sends at most 31 bytes as lowercase hex."""

    def __init__(self, port: str, baud: int = 115200, max_bytes: int = 31):
        self.port = serial.serial_for_url(port, baudrate=baud, timeout=0.1)
        self.max_bytes = max_bytes
        self.lines: queue.Queue[str] = queue.Queue()
        self.running = True
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        line = ""
        while self.running:
            for ch in self.port.read(self.port.in_waiting or 1).decode(errors="replace"):
                if ch == "\n":
                    self.lines.put(line)
                    line = ""
                elif ch not in "\r\0":
                    line += ch

    def close(self) -> None:
        self.running = False
        self.reader.join()
        self.port.close()

    def send(self, command: str, timeout: float = 5.0) -> list[str]:
        self.port.write(f"{command}%".encode())
        lines = []
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no response to command {command}") from None
            if line:
                lines.append(line)
            if "m-ready" in line:
                return lines

    def field(self, command: str, pattern: str) -> str:
        for line in self.send(command):
            if m := re.match(pattern, line):
                return m.group(1)
        raise AssertionError(f"{command}: no line matching {pattern}")

    def load(self, data: bytes) -> None:
        self.send(f"db load {len(data)}")
        for i in range(0, len(data), self.max_bytes):
            self.send("db " + "".join(f"{b:02x}" for b in data[i:i + self.max_bytes]))

    def infer(self, iterations: int, warmups: int) -> dict:
        out: dict = {}
        for line in self.send(f"infer {iterations} {warmups}", timeout=30.0):
            if m := re.match(r"^m-results-\[([^]]+)\]$", line):
                out["results"] = [float(v) for v in m.group(1).split(",") if v.strip()]
            elif m := re.match(r"^m-lap-us-([0-9]+)$", line):
                out["end" if "start" in out else "start"] = int(m.group(1))
        return out


def run_tests_yaml(host: RunnerGrammarHost, tests: dict, dataset_path: Path) -> dict:
    """The runner's accuracy flow: model id from `profile` → its script in tests.yaml → the
    dataset folder of the script's model → per file `download` and `infer`; each result is
    normalised (scores / sum) before argmax, as the runner's summary does."""
    model = host.field("profile", r"^m-model-\[([^]]+)]$")
    script = tests[model]
    folder = dataset_path / script["model"]
    with open(folder / script["truth_file"]) as f:
        truth = list(csv.DictReader(f, fieldnames=["file", "classes", "class", "bytes_to_send",
                                                   "stride"]))
    (loop,) = script["script"]
    steps = loop["loop"]
    assert steps[0] == "download" and steps[1].startswith("infer ")
    iterations, warmups = (int(v) for v in steps[1].split()[1:3])
    predicted, laps = [], []
    for row in truth:
        host.load((folder / row["file"]).read_bytes())
        res = host.infer(iterations, warmups)
        scores = res["results"]
        if len(scores) > 1:
            total = sum(scores)
            scores = [s / total for s in scores]
        predicted.append(int(np.argmax(scores)))
        laps.append(res["end"] - res["start"])
    labels = np.array([int(row["class"]) for row in truth])
    return {"model": model, "top1": 100.0 * float(np.mean(np.array(predicted) == labels)),
            "files": len(truth), "laps_us": laps}


TESTS_YAML = """
ic01:
  name: image_classification
  model: ic01
  truth_file: y_labels.csv
  script:
    - loop:
      - download
      - infer 1 0
"""


@pytest.mark.parametrize("transport", ["--pty", "--tcp"])
def test_runner_grammar_reaches_full_top1_on_the_healthy_board(digits_package, keypair,
                                                               tmp_path, transport):
    from fpgaprint.core.package import load_vectors
    from fpgaprint.hw_targets.mlperf_runner import write_dataset

    pub = keypair[1]
    data = write_dataset(digits_package, tmp_path / "datasets", "ic01", trusted_key=pub)
    golden = load_vectors(digits_package)["golden_labels"]
    args = ["--tcp", "127.0.0.1:0"] if transport == "--tcp" else ["--pty"]
    with ServedBoard(digits_package, *args, "--trusted-key", pub, "--protocol", "mlperf-tiny",
                     "--mlperf-model-id", "ic01") as board:
        host = RunnerGrammarHost(board.port)
        try:
            name = host.field("name", r"^m-(?:name)-dut-\[([^]]+)]$")
            result = run_tests_yaml(host, yaml.safe_load(TESTS_YAML), data.parent)
        finally:
            host.close()
    assert name == "fpgaprint-Pynq-Z1"
    assert result["model"] == "ic01" and result["files"] == len(golden)
    assert result["top1"] == 100.0
    assert all(lap >= 0 for lap in result["laps_us"])


def test_dataset_layout_and_labels(digits_package, keypair, tmp_path):
    from fpgaprint.core.package import load_vectors
    from fpgaprint.hw_targets.mlperf_runner import write_dataset

    v = load_vectors(digits_package)
    folder = write_dataset(digits_package, tmp_path, "kws01", labels="expected",
                           trusted_key=keypair[1])
    assert folder == tmp_path / "kws01"
    rows = list(csv.reader(open(folder / "y_labels.csv")))
    assert len(rows) == len(v["inputs"]) and all(r[1] == "10" for r in rows)
    assert [int(r[2]) for r in rows] == v["expected_labels"].tolist()
    first = np.frombuffer((folder / rows[0][0]).read_bytes(), dtype=np.uint8)
    np.testing.assert_array_equal(first, v["inputs"][0])
    with pytest.raises(InputError, match="kws01: already exists"):
        write_dataset(digits_package, tmp_path, "kws01", trusted_key=keypair[1])
    with pytest.raises(InputError, match="model id 'a b'"):
        write_dataset(digits_package, tmp_path, "a b", trusted_key=keypair[1])


RUNNER_DOUBLE = '''
"""Stand-in for the runner's port discovery (the real runner is not available to tests):
keep the listed serial ports with the dut's VID/PID, open the first, ask its name."""
import sys
import serial
from serial.tools import list_ports

vid, pid, out = int(sys.argv[1], 16), int(sys.argv[2], 16), sys.argv[3]
ports = [p.device for p in list_ports.comports(True) if p.vid == vid and p.pid == pid]
with serial.Serial(ports[0], 115200, timeout=0.1) as s:
    s.write(b"name%")
    data = b""
    while b"m-ready" not in data:
        data += s.read(64)
open(out, "w").write(data.decode())
'''


@pytest.mark.parametrize("transport", [PtyTransport, lambda: TcpTransport("127.0.0.1", 0)])
def test_runner_launcher_lists_the_board_under_the_devices_yaml_usb_id(tmp_path, transport):
    (tmp_path / "main.py").write_text(RUNNER_DOUBLE)
    out = tmp_path / "name.txt"
    handler = MlperfTinyHandler(MatBackend(), (16,), "INT8")
    with BoardLink(transport(), handler, LinkFaults()) as link:
        proc = subprocess.run(
            [sys.executable, "-m", "fpgaprint.hw_targets.mlperf_runner", "run", str(tmp_path),
             "--port", link.url, "--usb", "0x16C0:05DF", "--", "16c0", "5df", str(out)],
            capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().splitlines()[0] == "m-name-dut-[fpgaprint-ZCU104]"


def test_runner_launcher_refuses_a_folder_without_main(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fpgaprint.hw_targets.mlperf_runner", "run", str(tmp_path),
         "--port", "/dev/null", "--usb", "zz"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--usb 'zz': expected VID:PID" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "fpgaprint.hw_targets.mlperf_runner", "run", str(tmp_path),
         "--port", "/dev/null"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no main.py" in proc.stderr


@pytest.mark.parametrize("model_id", ["ad01", "sww01", "AD01"])
def test_model_ids_the_runner_cannot_drive_are_warned_of(digits_package, keypair, tmp_path,
                                                          capsys, model_id):
    from fpgaprint.hw_targets.mlperf_runner import write_dataset

    write_dataset(digits_package, tmp_path, model_id, trusted_key=keypair[1])
    err = capsys.readouterr().err
    assert err.startswith(f"warning: MLPerf Tiny model id {model_id!r}: ")
    assert "the runner cannot drive this board under it (use ic01" in err
    write_dataset(digits_package, tmp_path, "ic01", trusted_key=keypair[1])
    assert capsys.readouterr().err == ""


def test_host_ports_on_socket_urls_send_without_delay():
    """Nagle's algorithm off on the host's `socket://` ports (the runner's and the verifier's):
    a command and its `%` written apart would otherwise wait for the board's delayed ACK."""
    import socket

    from fpgaprint.harness.port import BoardPort
    from fpgaprint.hw_targets.mlperf_runner import list_board_port

    def nodelay(ser) -> int:
        return ser._socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

    listener = TcpTransport("127.0.0.1", 0)
    try:
        with MlperfTinyClient(listener.url) as client:
            assert nodelay(client._ser) != 0
        port = BoardPort(listener.url, 115200, 1.0, {})
        port.open()
        try:
            assert nodelay(port._ser) != 0
        finally:
            port.close()
        opener = serial.Serial
        try:
            list_board_port(listener.url, (0x0483, 0x374B))
            runner_port = serial.Serial(listener.url, 115200, timeout=1)
            assert nodelay(runner_port) != 0
            runner_port.close()
        finally:
            serial.Serial = opener
    finally:
        listener.close()


def test_the_board_logs_its_rate_and_the_count_of_a_performance_window(handler, caplog):
    from fpgaprint.hw_targets.mlperf import WINDOW_S, window_count

    run(handler, "db load 16%db " + "01" * 16 + "%")
    with caplog.at_level("INFO", logger="fpgaprint.board"):
        run(handler, "infer 1 0%infer 9 0%")  # an accuracy run's single inferences: no rate
        assert not caplog.records
        run(handler, "infer 50 0%")
    (record,) = [r for r in caplog.records if "inferences/s" in r.getMessage()]
    m = re.fullmatch(r"infer 50: [\d.]+ s, ([\d.]+) inferences/s; a 10-30 s performance "
                     r"window: infer (\d+)", record.getMessage())
    assert m, record.getMessage()
    rate, count = float(m.group(1)), int(m.group(2))
    assert WINDOW_S[0] * rate * 0.99 <= count <= WINDOW_S[1] * rate * 1.01
    assert window_count(200.0) == 4000  # 20 s, the middle of the window, at 200 inferences/s
