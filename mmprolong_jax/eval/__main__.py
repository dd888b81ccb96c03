import sys

from mmprolong_jax.eval.run import main

sys.exit(main())
