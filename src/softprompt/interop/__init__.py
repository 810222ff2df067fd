"""Exchange with other tools: PEFT prompt-tuning adapters and vLLM `prompt_embeds` files."""
