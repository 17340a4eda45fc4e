"""The quick start with FastCUT: configs/quickstart_cut.py with
configs/fastcut.py's changes (no identity NCE term, lambda_NCE 10,
flip-equivariance).

  python main.py --config=configs/quickstart_fastcut.py --workdir=runs/quickstart_fastcut
"""

from configs import quickstart_cut


def get_config():
  config = quickstart_cut.get_config()
  config.train.nce_idt = False
  config.train.lambda_nce = 10.0
  config.train.flip_equivariance = True
  return config
