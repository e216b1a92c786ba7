"""A DLRM laid out like facebookresearch/dlrm's DLRM_Net (emb_l / bot_l / top_l, dot interaction), run by real
PyTorch for the interop tests.

  write OUT_DIR SPEC_JSON   build the model from SPEC, take one Adagrad step, save it as dlrm_s_pytorch.py's
                            --save-model does (a dict with state_dict, epoch, opt_state_dict, ...) to OUT_DIR/model.pt,
                            random inputs to OUT_DIR/inputs.json and the module's scores on them to OUT_DIR/scores.json
  score MODEL_PT SPEC_JSON INPUTS_JSON OUT_JSON
                            load MODEL_PT (a bare state_dict) strictly into the module and score the inputs

SPEC: {"dense": 4, "bot": [8, 4], "top": [8, 1], "tables": [rows, ...], "dim": 4, "self": false, "seed": 1}
"dense": 0 builds the id-only variant: no bot_l, the interaction over the embeddings alone.
"""
import json
import sys

import numpy as np
import torch
import torch.nn as nn


def mlp(widths, sigmoid_last):
    layers = []
    for i in range(len(widths) - 1):
        linear = nn.Linear(widths[i], widths[i + 1], bias=True)
        # dlrm_s_pytorch.py's initialisation
        n, m = widths[i], widths[i + 1]
        linear.weight.data = torch.tensor(np.random.normal(0.0, np.sqrt(2 / (m + n)), size=(m, n)).astype(np.float32))
        linear.bias.data = torch.tensor(np.random.normal(0.0, np.sqrt(1 / m), size=m).astype(np.float32))
        layers.append(linear)
        layers.append(nn.Sigmoid() if sigmoid_last and i == len(widths) - 2 else nn.ReLU())
    return nn.Sequential(*layers)


class DLRM_Net(nn.Module):
    def __init__(self, spec):
        super().__init__()
        d = spec["dim"]
        self.dense = spec["dense"]
        self.self_interaction = spec.get("self", False)
        self.emb_l = nn.ModuleList()
        for rows in spec["tables"]:
            bag = nn.EmbeddingBag(rows, d, mode="sum", sparse=True)
            bag.weight.data = torch.tensor(np.random.uniform(-np.sqrt(1 / rows), np.sqrt(1 / rows), size=(rows, d)).astype(np.float32))
            self.emb_l.append(bag)
        if self.dense > 0:
            self.bot_l = mlp([self.dense] + spec["bot"], sigmoid_last=False)
        n = len(spec["tables"]) + (1 if self.dense > 0 else 0)
        pairs = n * (n + 1) // 2 if self.self_interaction else n * (n - 1) // 2
        self.top_l = mlp([(d if self.dense > 0 else 0) + pairs] + spec["top"], sigmoid_last=True)

    def forward(self, dense_x, offsets, indices):
        ly = [bag(indices[k], offsets[k]) for k, bag in enumerate(self.emb_l)]
        vectors = ([self.bot_l(dense_x)] if self.dense > 0 else []) + ly
        batch, d = ly[0].shape
        t = torch.cat(vectors, dim=1).view((batch, -1, d))
        z = torch.bmm(t, torch.transpose(t, 1, 2))
        _, ni, nj = z.shape
        offset = 1 if self.self_interaction else 0
        li = torch.tensor([i for i in range(ni) for j in range(i + offset)])
        lj = torch.tensor([j for i in range(nj) for j in range(i + offset)])
        r = torch.cat(([vectors[0]] if self.dense > 0 else []) + [z[:, li, lj]], dim=1)
        return self.top_l(r).view(-1)


def random_inputs(spec, batch):
    dense = np.random.normal(size=(batch, max(spec["dense"], 0))).astype(np.float32)
    offsets, indices = [], []
    for rows in spec["tables"]:
        lengths = np.random.randint(1, 4, size=batch)
        offsets.append(np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist())
        indices.append(np.random.randint(0, rows, size=int(lengths.sum())).tolist())
    return {"dense": dense.tolist(), "offsets": offsets, "indices": indices}


def score(model, inputs):
    with torch.no_grad():
        dense = torch.tensor(inputs["dense"], dtype=torch.float32)
        offsets = [torch.tensor(o, dtype=torch.long) for o in inputs["offsets"]]
        indices = [torch.tensor(i, dtype=torch.long) for i in inputs["indices"]]
        return model(dense, offsets, indices).tolist()


def main():
    torch.set_num_threads(1)
    if sys.argv[1] == "write":
        out, spec = sys.argv[2], json.load(open(sys.argv[3]))
        np.random.seed(spec.get("seed", 1))
        model = DLRM_Net(spec)
        inputs = random_inputs(spec, 64)
        # One training step, so the saved optimizer state holds tensors as a real checkpoint's does.
        opt = torch.optim.Adagrad(model.parameters(), lr=0.01)
        dense = torch.tensor(inputs["dense"])
        p = model(dense, [torch.tensor(o) for o in inputs["offsets"]], [torch.tensor(i) for i in inputs["indices"]])
        nn.functional.binary_cross_entropy(p, torch.ones_like(p)).backward()
        opt.step()
        torch.save({"epoch": 1, "nepochs": 1, "nbatches": 1, "nbatches_test": 0, "iter": 1,
                    "state_dict": model.state_dict(), "train_acc": 0.5, "train_loss": 0.7,
                    "test_acc": 0.0, "test_loss": 0.0, "opt_state_dict": opt.state_dict()}, out + "/model.pt")
        json.dump(inputs, open(out + "/inputs.json", "w"))
        json.dump(score(model, inputs), open(out + "/scores.json", "w"))
    elif sys.argv[1] == "score":
        model = DLRM_Net(json.load(open(sys.argv[3])))
        saved = torch.load(sys.argv[2])
        # dlrm_s_pytorch.py --load-model reads the weights from the checkpoint dict's "state_dict".
        model.load_state_dict(saved["state_dict"] if "state_dict" in saved else saved, strict=True)
        json.dump(score(model, json.load(open(sys.argv[4]))), open(sys.argv[5], "w"))
    else:
        raise SystemExit("usage: reference_dlrm.py write|score ...")


if __name__ == "__main__":
    main()
