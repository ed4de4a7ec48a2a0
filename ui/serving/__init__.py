"""What serves the tabs: models and atlases loaded once for all visitors (`session`), the one
build worker and its panel (`builds`), public mode's policy (`public`), the address and queue
limits (`serve`), the atlas chosen at start (`startup`), long work streamed from a thread
(`streaming`), failures as clear messages (`errors`) and deep links (`links`). Imports no tab.
"""
