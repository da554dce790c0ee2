"""The networks: plain ``nn.Module`` definitions, no file I/O, and one registry of them
(:mod:`.registry`: ``register_model`` beside each architecture, ``create_model`` by name).

* :mod:`.inception_resnet_v1` -- FaceNet's Inception-ResNet-v1 (the pretrained embedders);
* :mod:`.facenet_paper` -- the paper's NN1-NN4, NNS1, NNS2;
* :mod:`.mtcnn_nets` -- MTCNN's P-, R- and O-Net;
* :mod:`.complexity` -- parameter and multiply-add counts.
"""

from .registry import ArchitectureSpec, create_model, get_architecture, list_architectures, register_model

__all__ = ["ArchitectureSpec", "register_model", "create_model", "list_architectures", "get_architecture"]
