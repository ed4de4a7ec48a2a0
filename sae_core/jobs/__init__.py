"""Long work in the background: one worker builds atlases (SAEs, layer map, feature index,
presets) for everyone, with progress, cancel and resume. `status` holds what a visitor
sees; `stages` the steps of a build; `worker` the thread. May import everything in
`sae_core` (it sits on top of atlas, explore and steer).
"""
