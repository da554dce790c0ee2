"""Pretrained models: the registry (data in ``facespace/pretrained.toml``), verified weight
fetching into the cache, the converters from Keras HDF5 and TensorFlow GraphDef, and the
loader, the one place a registered name becomes a network holding its weights.

* :mod:`.registry` -- :class:`~.registry.PretrainedConfig`, ``get_config``, ``list_models``;
* :mod:`.weights` -- ``weight_paths(config)``, ``pull``, ``weight_status``;
* :mod:`.loader` -- ``load_embedder(config)``, ``load_mtcnn_net``, the converted-weight cache;
* :mod:`.convert_keras`, :mod:`.convert_graphdef`, :mod:`.graphdef` -- the converters.
"""
