"""Post-training: SFT, DPO and GRPO as objectives of the one fit loop, plus the staged pipeline.

``chat`` renders conversations and finds assistant tokens; ``examples`` reads conversations,
preference pairs and prompts; ``batches`` packs them; ``objectives`` holds the losses;
``rollout`` samples and scores GRPO groups; ``train`` runs a stage; ``export`` writes merged
weights and PEFT adapters; ``pipeline`` chains pretrain -> SFT -> DPO -> GRPO behind gates.
"""
