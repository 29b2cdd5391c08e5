"""The worked example of docs/parity.md: the course's CIFAR-10 ``Net``, its jaxcnn twin, one call.

    PYTHONPATH=. python docs/parity_example.py
"""

import torch
import torch.nn as tnn
import torch.nn.functional as TF
from flax import nnx

from jaxcnn import nn, parity
from jaxcnn.nn import functional as F


class Net(tnn.Module):  # the course's CIFAR-10 network, in PyTorch
    def __init__(self):
        super().__init__()
        self.conv1 = tnn.Conv2d(3, 6, 5)
        self.pool = tnn.MaxPool2d(2, 2)
        self.conv2 = tnn.Conv2d(6, 16, 5)
        self.fc1 = tnn.Linear(16 * 5 * 5, 120)
        self.fc2 = tnn.Linear(120, 84)
        self.fc3 = tnn.Linear(84, 10)

    def forward(self, x):  # (N, 3, 32, 32)
        x = self.pool(TF.relu(self.conv1(x)))
        x = self.pool(TF.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = TF.relu(self.fc1(x))
        x = TF.relu(self.fc2(x))
        return self.fc3(x)


class JaxNet(nnx.Module):  # its jaxcnn twin: the same names, NHWC inside
    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nn.Conv2d(3, 6, 5, rngs=rngs)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5, rngs=rngs)
        self.fc1 = nn.Linear(16 * 5 * 5, 120, rngs=rngs)
        self.fc2 = nn.Linear(120, 84, rngs=rngs)
        self.fc3 = nn.Linear(84, 10, rngs=rngs)

    def __call__(self, x):  # (N, 32, 32, 3)
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = F.flatten(x, 1, torch_order=True)  # torch's C, H, W order
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


torch.manual_seed(0)
report = parity.compare(Net(), JaxNet(nnx.Rngs(0)), torch.randn(4, 3, 32, 32), mode="train", reference="float64")
report.print()



class JaxOrder(JaxNet):  # a common porting mistake: flattening NHWC maps in JAX's order
    def __call__(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = F.flatten(x, 1)  # H, W, C order: fc1's torch weights expect C, H, W
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


print(parity.compare(Net(), JaxOrder(nnx.Rngs(0)), torch.randn(4, 3, 32, 32)).failure_message())


class Wrong(JaxNet):  # conv2 with padding 1, which torch's does not have
    def __init__(self, rngs):
        super().__init__(rngs)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=1, rngs=rngs)


try:
    parity.assert_parity(Net(), Wrong(nnx.Rngs(0)), torch.randn(4, 3, 32, 32))
except AssertionError as error:
    print(error)
