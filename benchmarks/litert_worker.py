"""LiteRT alone, for benchmarks/ticket_inference.py: TFLite files loaded and
timed on command in a process that cannot import TensorFlow or lth_tf, as
a user deploys them (ai-edge-litert, one thread). One JSON command per line
on stdin, one JSON answer per line on stdout:

    {"load": NAME, "path": FILE, "builtin": BOOL}  -> {}   builtin kernels, or LiteRT's default (XNNPACK)
    {"input": NPY, "names": [NAME, ...]}           -> {}   those files' input from now on (resized to it)
    {"time": NAME, "calls": N}                     -> {"seconds": S}  N calls back to back: set the input,
                                                            invoke, read the output (invoke alone for a file
                                                            loaded without an input)
    {"output": NAME}                               -> {"output": [[...]]}  one call's output

A file with a serving_default signature (model.tflite) is read through it
(input "inputs", output "logits"); any other (one layer alone) through its
first input and output, fed a fixed random input of its own shape.
"""
import json
import os
import sys
import time

sys.modules["lth_tf"] = sys.modules["tensorflow"] = None  # importing either fails

import numpy as np  # noqa: E402
from ai_edge_litert.interpreter import Interpreter, OpResolverType  # noqa: E402


class File:
    def __init__(self, path: str, builtin: bool):
        resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if builtin else OpResolverType.AUTO
        self.interpreter = Interpreter(model_path=path, num_threads=1, experimental_op_resolver_type=resolver)
        if self.interpreter.get_signature_list():
            runner = self.interpreter.get_signature_runner("serving_default")
            self.input = runner.get_input_details()["inputs"]["index"]
            self.output = runner.get_output_details()["logits"]["index"]
            del runner  # it holds the tensors: allocate_tensors refuses while it lives
        else:
            self.input = self.interpreter.get_input_details()[0]["index"]
            self.output = self.interpreter.get_output_details()[0]["index"]
        self.interpreter.allocate_tensors()
        detail = next(d for d in self.interpreter.get_input_details() if d["index"] == self.input)
        self.x = None  # None: invoke alone, on this fixed input
        self.interpreter.set_tensor(self.input, np.random.default_rng(0).standard_normal(detail["shape"]).astype(
            np.float32))

    def feed(self, x: np.ndarray):
        self.interpreter.resize_tensor_input(self.input, x.shape)
        self.interpreter.allocate_tensors()
        self.x = x

    def call(self):
        if self.x is not None:
            self.interpreter.set_tensor(self.input, self.x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output) if self.x is not None else None

    def seconds(self, calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            self.call()
        return time.perf_counter() - start


def main():
    answers = os.fdopen(os.dup(1), "w")  # the answers' own pipe; anything else printed goes to stderr
    os.dup2(2, 1)
    files = {}
    for line in sys.stdin:
        command = json.loads(line)
        answer = {}
        if "load" in command:
            files[command["load"]] = File(command["path"], command["builtin"])
        elif "input" in command:
            x = np.load(command["input"])
            for name in command["names"]:
                files[name].feed(x)
        elif "time" in command:
            answer["seconds"] = files[command["time"]].seconds(command["calls"])
        elif "output" in command:
            answer["output"] = files[command["output"]].call().tolist()
        print(json.dumps(answer), file=answers, flush=True)


if __name__ == "__main__":
    main()
