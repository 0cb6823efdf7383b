<?php
/**
 * Credentials: password changes on every path, and login renames, noted for the request's
 * report (UserRelay_Hooks holds the notes and sends them at shutdown).
 *
 * A password is set by the reset flow (password_reset, then after_password_reset), by
 * wp_set_password() (its action exists from WordPress 6.2 on), or inside wp_insert_user() (a
 * profile or admin edit). WordPress 6.1 gives wp_set_password() no hook at all: its UPDATE of
 * the users row, seen through the query filter, is the only sign, and so is a login rename (no
 * API exists for it). Each path records the hash (or login) before the write, so the shutdown
 * comparison catches the change. Nothing here runs while a delivery is applied.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Notes password changes and login renames.
 */
final class UserRelay_Credential_Hooks {

	/**
	 * The request's notes.
	 *
	 * @var UserRelay_Hooks
	 */
	private $hooks;

	/**
	 * Constructor.
	 *
	 * @param UserRelay_Hooks $hooks The request's notes.
	 */
	public function __construct( UserRelay_Hooks $hooks ) {
		$this->hooks = $hooks;
	}

	/**
	 * Adds the hooks.
	 */
	public function register(): void {
		add_action( 'password_reset', array( $this, 'on_password_reset' ), 10, 1 );
		add_action( 'after_password_reset', array( $this, 'on_password_set' ), 10, 1 );
		add_action( 'wp_set_password', array( $this, 'on_password_set' ), 10, 2 ); // WordPress 6.2+.
		add_action( 'clean_user_cache', array( $this, 'on_clean_user_cache' ), 10, 2 );
		// WordPress 6.1 has no hook in wp_set_password(): its UPDATE is the only sign.
		add_filter( 'query', array( $this, 'on_query' ) );
	}

	/**
	 * The reset flow is about to set a new password: the user object still has the old hash.
	 *
	 * @param WP_User $user The user.
	 */
	public function on_password_reset( $user ): void {
		if ( UserRelay_Hooks::suppressed() || ! $user instanceof WP_User ) {
			return;
		}
		$notes = &$this->hooks->touch( $user->ID );
		if ( null === $notes['hash_before'] ) {
			$notes['hash_before'] = (string) $user->user_pass;
		}
	}

	/**
	 * A password was set: by the reset flow (after_password_reset passes the user), or by
	 * wp_set_password() on WordPress 6.2+ (its action passes the password, then the user id).
	 *
	 * @param WP_User|string $user_or_password The user, or the plain password (never kept).
	 * @param int            $user_id          User id, with the wp_set_password action.
	 */
	public function on_password_set( $user_or_password, $user_id = 0 ): void {
		if ( UserRelay_Hooks::suppressed() ) {
			return;
		}
		$notes             = &$this->hooks->touch( $user_or_password instanceof WP_User ? $user_or_password->ID : (int) $user_id );
		$notes['password'] = true;
	}

	/**
	 * Any write to a user ends here; the user object passed may still hold the old hash.
	 *
	 * @param int     $user_id User id.
	 * @param WP_User $user    The user as cached before the clean.
	 */
	public function on_clean_user_cache( $user_id, $user ): void {
		if ( UserRelay_Hooks::suppressed() || $this->hooks->touched( (int) $user_id ) ) {
			return;
		}
		$notes = &$this->hooks->touch( (int) $user_id, false );
		if ( $user instanceof WP_User ) {
			$notes['hash_before'] = (string) $user->user_pass;
		}
	}

	/**
	 * Sees wp_set_password()'s UPDATE before it runs (WordPress 6.1 gives no hook): records the
	 * hash before it, so the shutdown comparison catches the change. Costs one strpos per query.
	 *
	 * @param string $query SQL (returned unchanged).
	 * @return string
	 */
	public function on_query( $query ) {
		global $wpdb;
		if ( UserRelay_Hooks::suppressed() || ( false === strpos( $query, 'user_pass' ) && false === strpos( $query, 'user_login' ) ) ) {
			return $query;
		}
		if ( false === strpos( $query, 'user_pass' ) ) {
			// A login rename (WordPress has no API for it: tools UPDATE the row, as core would).
			$pattern = '/^\s*UPDATE\s+`?' . preg_quote( $wpdb->users, '/' ) . '`?\s+SET\s.*`?user_login`?\s*=.*\sWHERE\s+`?ID`?\s*=\s*\'?(\d+)\'?\s*$/is';
			if ( preg_match( $pattern, $query, $match ) ) {
				$notes            = &$this->hooks->touch( (int) $match[1] );
				$notes['edit']    = true;
				$notes['profile'] = true;
				if ( null === $notes['login_before'] ) {
					// Runs before the UPDATE: this is the login before it.
					$notes['login_before'] = (string) $wpdb->get_var( $wpdb->prepare( "SELECT user_login FROM {$wpdb->users} WHERE ID = %d", (int) $match[1] ) );
				}
			}
			return $query;
		}
		$pattern = '/^\s*UPDATE\s+`?' . preg_quote( $wpdb->users, '/' ) . '`?\s+SET\s.*`?user_pass`?\s*=.*\sWHERE\s+`?ID`?\s*=\s*\'?(\d+)\'?\s*$/is';
		if ( preg_match( $pattern, $query, $match ) ) {
			$user_id = (int) $match[1];
			$notes   = &$this->hooks->touch( $user_id );
			if ( null === $notes['hash_before'] ) {
				// Runs before the UPDATE: this is the stored hash before it.
				$notes['hash_before'] = (string) $wpdb->get_var( $wpdb->prepare( "SELECT user_pass FROM {$wpdb->users} WHERE ID = %d", $user_id ) );
			}
		}
		return $query;
	}
}
