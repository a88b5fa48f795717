# scripts/convert_cmrclip.py (checkpoint -> model directory): pure-stdlib
# Python test over the committed torch.save fixture
# (fixtures/model/small/tiny_cmrclip.bin) and checkpoints it writes itself.
# The Debian interpreter, as for the phantom's archive test; no PyTorch needed.
cmr_add_python_test(test_convert 300)
