"""Neural-network NODDI estimators: training data, training, ONNX export, inference, model store.

Only :mod:`noddi_bids.nn.train` and :mod:`noddi_bids.nn.export` import PyTorch;
:mod:`noddi_bids.nn.infer` and :mod:`noddi_bids.nn.store` run on ONNX Runtime alone, so
applying a network never loads torch (the store imports the trainer only when it must train).
"""
